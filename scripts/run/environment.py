"""The environment `make run` gives its processes, and the namespace of its Kafka names.

`make run` is for development: DEBUG on (so the development secret key and callback secret
apply), no HTTPS redirect. Its topics and consumer group carry a namespace derived from the
checkout (`RUN_NAMESPACE`, default `<directory>-<hash of its path>`), so that two checkouts
running on one broker never read each other's events. Anything set in the environment or in
`.env` wins over these defaults.
"""

from __future__ import annotations

import errno
import hashlib
import re
import socket
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]

# Settings whose development values `make run` sets unless the environment or .env sets them.
DEVELOPMENT_DEFAULTS = {
    "DEBUG": "1",
    "SECURE_SSL_REDIRECT": "0",
    "PYTHONUNBUFFERED": "1",
    "CONSUMER_METRICS_PORT": "9809",
}


def dotenv_values(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped, quotes removed)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def namespace_default(project_dir: Path = PROJECT_DIR) -> str:
    digest = hashlib.sha1(str(project_dir).encode()).hexdigest()[:6]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", project_dir.name).strip("-").lower() or "commerce"
    return f"{name[:30]}-{digest}"


def run_environment(environ: dict[str, str], project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """What `make run` sets on top of `environ` (the variables it adds, nothing else)."""
    dotenv = dotenv_values(project_dir / ".env")

    def unset(key: str) -> bool:
        # An empty value in .env counts as unset: the commented .env.example means "default".
        return not environ.get(key) and not dotenv.get(key)

    added = {key: value for key, value in DEVELOPMENT_DEFAULTS.items() if unset(key)}
    namespace = environ.get("RUN_NAMESPACE") or dotenv.get("RUN_NAMESPACE") or namespace_default(project_dir)
    names = {
        "KAFKA_TOPIC_CATALOG": f"{namespace}.catalog-events",
        "KAFKA_TOPIC_ORDERS": f"{namespace}.order-events",
        "BACKOFFICE_GROUP_ID": f"{namespace}.backoffice",
    }
    added.update({key: value for key, value in names.items() if unset(key)})
    host, port = run_address(environ, dotenv)
    if unset("PAYMENT_CALLBACK_BASE_URL"):
        added["PAYMENT_CALLBACK_BASE_URL"] = f"http://{host}:{port}"
    return added


def run_address(environ: dict[str, str], dotenv: dict[str, str] | None = None) -> tuple[str, int]:
    """RUN_HOST and RUN_PORT (the environment first, then .env). ValueError, naming RUN_PORT,
    when it is not a port number."""
    dotenv = dotenv_values(PROJECT_DIR / ".env") if dotenv is None else dotenv
    host = environ.get("RUN_HOST") or dotenv.get("RUN_HOST") or "127.0.0.1"
    given = environ.get("RUN_PORT") or dotenv.get("RUN_PORT") or "8000"
    if not given.isascii() or not given.isdigit() or not 1 <= int(given) <= 65535:
        raise ValueError(f"RUN_PORT must be a port number from 1 to 65535, not {given!r}")
    return host, int(given)


def address_taken(host: str, port: int) -> str | None:
    """Why `make run`'s server could not listen at host:port (another process listens there,
    the host is not this machine's), or None. Probed as runserver binds: a bracketed host
    (`[::1]`) on IPv6, any other on IPv4 (a name that resolves to ::1 first included)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family = socket.AF_INET6 if bare != host else socket.AF_INET
    try:
        found = socket.getaddrinfo(bare, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"RUN_HOST {host!r} cannot be resolved: {exc.strerror}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the server binds: SO_REUSEADDR, so a port in TIME_WAIT is free, a listening one not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(found[0][4])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"{host}:{port} is taken by another process (RUN_PORT=8001 make run listens elsewhere)"
        return f"cannot listen at {host}:{port}: {exc.strerror}"
    return None


def kafka_bootstrap(environ: dict[str, str], dotenv: dict[str, str] | None = None) -> str:
    """The broker `make run` uses: KAFKA_BOOTSTRAP_SERVERS from the environment, then .env (as
    its components read it), else the local default."""
    dotenv = dotenv_values(PROJECT_DIR / ".env") if dotenv is None else dotenv
    return environ.get("KAFKA_BOOTSTRAP_SERVERS") or dotenv.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"


def empty_dotenv_keys(project_dir: Path = PROJECT_DIR) -> list[str]:
    """Keys .env sets to an empty value: Django reads them as "" rather than the default."""
    return sorted(key for key, value in dotenv_values(project_dir / ".env").items() if value == "")
