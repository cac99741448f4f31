"""`make run`: the whole pipeline on one machine, supervised, stopped by Ctrl-C (or `make stop`).

Uses the Kafka broker at KAFKA_BOOTSTRAP_SERVERS (starts the local one if none answers there, and
stops on exit only a broker it started), migrates, creates the topics and demo data, then runs
and supervises the API server, a Celery worker for domain reactions, a Celery worker for the
outbox relay, Celery beat and `consume_events` (the back office). A component that dies is
restarted with backoff; the status line shows readiness, the outbox backlog, the consumer lag
and the restarts. `--env` prints the environment it runs with (for `manage.py` commands).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


from run import supervisor as supervision
from run.environment import (
    PROJECT_DIR,
    address_taken,
    dotenv_values,
    empty_dotenv_keys,
    kafka_bootstrap,
    run_address,
    run_environment,
)
from run.status import PipelineFigures, is_ready, readiness
from run.supervisor import Component, Supervisor, component_stop, group_alive, group_kill

VAR_DIR = Path(os.environ.get("VAR_DIR") or PROJECT_DIR / "var")
LOG_DIR = VAR_DIR / "log"
PIDS_FILE = VAR_DIR / "run" / "run_local.json"
PY = sys.executable
KAFKA_LOCAL = str(PROJECT_DIR / "scripts" / "kafka-local")
STATUS_EVERY_S = 5.0


def say(message: str) -> None:
    print(f"make run: {message}", flush=True)


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=PROJECT_DIR, check=True)


def components() -> list[Component]:
    host, port = run_address(dict(os.environ))
    celery = [PY, "-m", "celery", "-A", "commerce"]
    # The queue names as commerce/settings.py derives them.
    settings_env = {**dotenv_values(PROJECT_DIR / ".env"), **os.environ}
    domain_queue = settings_env.get("CELERY_TASK_DEFAULT_QUEUE") or "celery"
    outbox_queue = settings_env.get("OUTBOX_CELERY_QUEUE") or f"{domain_queue}-outbox"
    argvs = {
        "server": [PY, "manage.py", "runserver", f"{host}:{port}", "--noreload"],
        # Domain reactions (the order following its payment, the gateway's answer) on a worker
        # of their own: relay drains never wait in line in front of them, nor take their slots.
        # A prefetch window wider than the settings' 1 per process: on the file transport the
        # worker's loop waits up to 2 s whenever the window is full, and the gateway's answers
        # (countdown tasks) hold slots of it; with a window of 2 it fetched 2 messages per 2 s.
        "worker": [
            *celery,
            "worker",
            "-Q",
            domain_queue,
            "-n",
            "domain@%h",
            "--concurrency=2",
            "--prefetch-multiplier=16",
            "--loglevel=INFO",
        ],
        "relay": [
            *celery,
            "worker",
            "-Q",
            outbox_queue,
            "-n",
            "relay@%h",
            "--pool=solo",
            "--prefetch-multiplier=4",
            "--loglevel=INFO",
        ],
        # Beat as a component of its own (not `worker --beat`): its death is seen and restarted,
        # and a killed worker cannot leave an orphan beat scheduling drains.
        "beat": [*celery, "beat", "--loglevel=INFO", "--pidfile=", "-s", str(VAR_DIR / "celerybeat-schedule")],
        "consumer": [PY, "manage.py", "consume_events"],
    }
    # On PostgreSQL the relay loop hears each commit's NOTIFY and publishes at once (the relay
    # worker above then only runs the beat drains, the safety net); SQLite keeps the Celery kick.
    database_url = settings_env.get("DATABASE_URL") or ""
    wakeup = (settings_env.get("OUTBOX_WAKEUP") or "auto").strip().lower()
    if database_url.startswith(("postgres", "pgsql")) and wakeup != "celery":
        argvs["relay-loop"] = [PY, "manage.py", "relay_loop"]
    return [Component(name, argv, LOG_DIR / f"{name}.log", PROJECT_DIR) for name, argv in argvs.items()]


def pids_read() -> dict | None:
    try:
        return json.loads(PIDS_FILE.read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_leftovers() -> bool:
    """Before starting: refuse if this checkout's `make run` runs; kill what a dead one left."""
    previous = pids_read()
    if previous is None:
        return True
    if pid_alive(previous["supervisor"]):
        say(f"make run already runs in this checkout (pid {previous['supervisor']}); `make stop` stops it")
        return False
    for name, info in previous.get("components", {}).items():
        pgid = info.get("pid")
        if pgid and group_alive(pgid) and _cwd_is_project(pgid):
            say(f"killing what the previous make run left of {name} (process group {pgid})")
            group_kill(pgid)
    PIDS_FILE.unlink(missing_ok=True)
    return True


def _cwd_is_project(pid: int) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == PROJECT_DIR
    except OSError:
        return False


def stop_running_supervisor() -> None:
    """`make stop` from another shell: ask the running `make run` to stop what it started."""
    state = pids_read()
    if state is None or not pid_alive(state["supervisor"]):
        reap_leftovers()
        say("nothing to stop")
        return
    pid = state["supervisor"]
    os.kill(pid, signal.SIGTERM)
    say(f"asked make run (pid {pid}) to stop")
    for _ in range(600):
        if not pid_alive(pid):
            return
        time.sleep(0.1)


def restart_component(name: str) -> int:
    """Stop one component (`component_stop`: its main process, then its group if it hangs); the
    supervisor starts it again."""
    state = pids_read()
    if state is None or not pid_alive(state["supervisor"]):
        say("make run is not running in this checkout")
        return 1
    info = state["components"].get(name)
    if info is None or not info.get("pid"):
        say(f"no component {name!r}; components: {', '.join(state['components'])}")
        return 1
    pid = info["pid"]
    say(f"stopping {name} (pid {pid}) ...")
    if component_stop(pid):
        say(f"stopped {name} (pid {pid}); make run starts it again")
    else:
        say(f"{name} (pid {pid}) did not stop in {supervision.STOP_TIMEOUT_S:.0f} s: killed; make run starts it again")
    return 0


class StackNotReady(Exception):
    """`make run` cannot start the stack; the message says why."""


def kafka_prepare() -> bool:
    """Make sure a broker answers; say which one and whether `make run` started it.

    The broker is KAFKA_BOOTSTRAP_SERVERS as the components read it (the environment, then
    .env): scripts/kafka-local is given the same, so that it starts one there or finds it."""
    bootstrap = kafka_bootstrap(dict(os.environ))
    environment = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}

    def local(command: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([KAFKA_LOCAL, command], capture_output=True, text=True, check=False, env=environment)
        if check and done.returncode != 0:
            output = (done.stderr + done.stdout).strip().splitlines()
            raise StackNotReady(
                f"no Kafka broker answers at {bootstrap} and the local one did not start there "
                f"(scripts/kafka-local {command} exited with {done.returncode}):\n"
                + "\n".join(f"    {line}" for line in output[-8:])
            )
        return done

    was_ours = local("status").returncode == 0
    local("start", check=True)
    ours_now = local("status").returncode == 0
    if ours_now and not was_ours:
        say(f"Kafka: started a local broker at {bootstrap} (stopped on exit)")
        return True
    if ours_now:
        say(f"Kafka: using this checkout's local broker at {bootstrap}, already running (left running)")
    else:
        say(f"Kafka: using the broker that answers at {bootstrap}, not started here (left running)")
    return False


def print_environment() -> int:
    try:
        added = run_environment(dict(os.environ))
    except ValueError as exc:
        print(f"make run: {exc}", file=sys.stderr)  # stdout is eval'd
        return 2
    for key, value in added.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stop", action="store_true", help="stop what a running `make run` started")
    parser.add_argument("--env", action="store_true", help="print the variables make run sets, as `export` lines")
    parser.add_argument(
        "--restart",
        metavar="COMPONENT",
        help="restart one component of the running `make run` (server, worker, "
        "relay, beat, consumer, relay-loop on PostgreSQL)",
    )
    parser.add_argument(
        "--demo",
        type=int,
        default=None,
        metavar="ACTIONS",
        help="run simulate_traffic with this many actions, report, then stop",
    )
    options = parser.parse_args()
    if options.env:
        return print_environment()
    if options.stop:
        stop_running_supervisor()
        return 0
    if options.restart:
        return restart_component(options.restart)
    if not reap_leftovers():
        return 1

    try:
        host, port = run_address(dict(os.environ))
    except ValueError as exc:
        say(str(exc))
        return 2
    taken = address_taken(host, port)
    if taken:
        say(f"the API server cannot listen: {taken}")
        return 2
    os.environ.update(run_environment(dict(os.environ)))
    empty = empty_dotenv_keys()
    if empty:
        say(
            f".env sets {', '.join(empty)} to an empty value, which overrides the default: "
            "comment the line out to get the default"
        )
    base = f"http://{host}:{port}"
    try:
        kafka_started_here = kafka_prepare()
    except StackNotReady as exc:
        say(str(exc))
        return 1
    say(
        f"topics {os.environ['KAFKA_TOPIC_CATALOG']}, {os.environ['KAFKA_TOPIC_ORDERS']}; "
        f"consumer group {os.environ['BACKOFFICE_GROUP_ID']}"
    )
    try:
        manage("migrate", "--noinput", "-v", "0")
        manage("ensure_topics")
        manage("seed_demo")
    except subprocess.CalledProcessError as error:
        say(
            f"preparing the stack failed: `manage.py {' '.join(error.cmd[2:])}` exited with "
            f"{error.returncode} (its message is above)"
        )
        if kafka_started_here:
            subprocess.run([KAFKA_LOCAL, "stop"], check=False)
        return 1

    supervisor = Supervisor(components(), say)

    def pids_write() -> None:
        PIDS_FILE.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: a reader (`make status`, the tests) never sees it half-written.
        written = PIDS_FILE.with_suffix(".tmp")
        written.write_text(json.dumps({"supervisor": os.getpid(), "components": supervisor.as_dict()}))
        os.replace(written, PIDS_FILE)

    supervisor.on_change = pids_write
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    figures = PipelineFigures(PROJECT_DIR)
    try:
        supervisor.start_all()
        say(f"API docs:   {base}/api/docs/")
        say(f"admin:      {base}/admin/   (development user admin / admin-dev-only)")
        say(f"dashboard:  {base}/admin/pipeline/")
        say(f"health:     {base}/readyz")
        say(
            "Ctrl-C or `make stop` stops everything it started; `make restart-<component>` "
            "restarts one (server, worker, relay, beat, consumer)"
        )
        figures.start()
        if options.demo is not None:
            return run_demo(options.demo, supervisor, base, lambda: stopping)
        next_status = 0.0
        said_ready = False
        while not stopping:
            supervisor.check()
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                line = readiness(base)
                print(f"[{time.strftime('%H:%M:%S')}] {line} | {figures.text} | {supervisor.summary()}", flush=True)
                if not said_ready and is_ready(line):
                    said_ready = True
                    say(f"ready: the API answers at {base}/api/ (the demo users' tokens are above)")
            time.sleep(0.2)
    finally:
        figures.stop()
        supervisor.stop_all()
        PIDS_FILE.unlink(missing_ok=True)
        if kafka_started_here:
            subprocess.run([KAFKA_LOCAL, "stop"], check=False)
        say("stopped")
    return 0


def run_demo(actions: int, supervisor: Supervisor, base: str, stopping: Callable[[], bool]) -> int:
    """`make demo`: traffic through the running stack, the report and the consistency check."""
    deadline = time.monotonic() + 90
    while not is_ready(line := readiness(base)):
        supervisor.check()
        if time.monotonic() > deadline or stopping():
            say(f"the stack did not become ready: {line}")
            return 1
        time.sleep(1)
    say(f"simulating {actions} user actions")
    traffic = subprocess.Popen(
        [PY, "manage.py", "simulate_traffic", "--base-url", base, "--actions", str(actions), "--drain-timeout", "300"],
        cwd=PROJECT_DIR,
    )
    while traffic.poll() is None:
        supervisor.check()  # a component that dies during the demo is restarted too
        if stopping():
            traffic.terminate()
        time.sleep(0.2)
    return traffic.returncode


if __name__ == "__main__":
    sys.exit(main())
