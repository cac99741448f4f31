"""`make run` for real in a copy of the checkout: its own SQLite, file broker and var/, on the broker
of KAFKA_BOOTSTRAP_SERVERS. Used by tests/run/ and bench/payment_confirm.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.ports import free_ports_outside_ephemeral_range

PROJECT_DIR = Path(__file__).resolve().parents[2]
READY = "database=ok cache=ok"
# What each of `make run`'s components logs once it serves (Celery's worker_ready; the consumer's
# first line after it made its consumer).
COMPONENTS_READY = {"worker": " ready.", "relay": " ready.", "consumer": "consuming "}


def project_copy(destination: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) under `destination`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in files:
        source = PROJECT_DIR / name
        if name == ".venv" or name.startswith(".venv") or not source.is_file():
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination


def free_port() -> int:
    # Below the ephemeral range: the stack's processes are restarted while clients reconnect.
    return free_ports_outside_ephemeral_range(1)


def stack_environment(port: int, **extra: str) -> dict[str, str]:
    """A newcomer's environment: nothing of the test run (no DATABASE_URL, no DEBUG), the broker."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env["KAFKA_BOOTSTRAP_SERVERS"] = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    if "KAFKA_JARS_DIR" in os.environ:
        env["KAFKA_JARS_DIR"] = os.environ["KAFKA_JARS_DIR"]
    env["RUN_PORT"] = str(port)
    env.update(extra)
    return env


class LocalStack:
    """`scripts/run_local.py` started in `project_dir`, output in `var/make-run.log` there."""

    def __init__(self, project_dir: Path, *, port: int | None = None, ready: str = READY, **env: str) -> None:
        self.project_dir = project_dir
        self.ready = ready  # the status line's text once the server answers (an older checkout's differs)
        self.port = port or free_port()
        self.env = stack_environment(self.port, **env)
        self.log_path = project_dir / "make-run.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 240.0) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "scripts/run_local.py"],
                cwd=self.project_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for(lambda: self.ready in self.output(), timeout=timeout, what=f"a status line with {self.ready!r}")
        # The status line says the server answers; the workers and the consumer boot at the same
        # time and may still be importing Django: a test's first order would pay for that.
        # Those this stack started (an older checkout, the benchmarks' baseline, has no relay).
        started = [name for name in COMPONENTS_READY if f"starting {name} (log:" in self.output()]
        # A component's log is appended to across restarts: it is ready once it said so more
        # often than it was restarted.
        for name in started:
            text = COMPONENTS_READY[name]
            self.wait_for(
                lambda name=name, text=text: (
                    self.component_log(name).count(text) > self.output().count(f"{name} exited with ")
                ),
                timeout=timeout,
                what=f"{name} ready ({text!r})",
            )

    def component_log(self, name: str) -> str:
        path = self.project_dir / "var" / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, condition, *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.popen is not None and self.popen.poll() is not None:
                raise AssertionError(
                    f"make run exited ({self.popen.returncode}) waiting for {what}:\n{self.output()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout:.0f} s:\n{self.output()[-4000:]}")
            time.sleep(0.3)

    def state(self) -> dict:
        return json.loads((self.project_dir / "var" / "run" / "run_local.json").read_text())

    def exited(self) -> bool:
        """Whether `make run`, once started, has exited."""
        return self.popen is not None and self.popen.poll() is not None

    def stop(self, signum: int = signal.SIGINT, timeout: float = 90.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            raise

    def database(self) -> sqlite3.Connection:
        return sqlite3.connect(self.project_dir / "var" / "db.sqlite3", timeout=30)

    def token(self, username: str = "alice") -> str:
        with self.database() as db:
            return db.execute(
                "SELECT t.key FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id WHERE u.username = ?",
                (username,),
            ).fetchone()[0]

    def api(self, method: str, path: str, body: dict | None = None, *, token: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, {"error": error.read().decode(errors="replace")[:500]}


def processes_in(directory: Path) -> list[str]:
    """Processes (pid and command line) whose working directory is `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == directory:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command}")
        except OSError:
            continue
    return found
