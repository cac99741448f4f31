"""`make run`: the whole pipeline on one machine, stopped by Ctrl-C (or `make stop`).

Starts the local Kafka broker (unless one answers at KAFKA_BOOTSTRAP_SERVERS), migrates, creates
the topics and demo data, then runs the API server, a Celery worker with beat (the outbox relay)
and `consume_events` (the back office), prints where everything is and a status line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_DIR / "var"
LOG_DIR = VAR_DIR / "log"
PIDS_FILE = VAR_DIR / "run" / "run_local.json"
PY = sys.executable

os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
HOST = os.environ.get("RUN_HOST", "127.0.0.1")
PORT = int(os.environ.get("RUN_PORT", "8000"))
os.environ.setdefault("PAYMENT_CALLBACK_BASE_URL", f"http://{HOST}:{PORT}")


def say(message: str) -> None:
    print(f"make run: {message}", flush=True)


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=PROJECT_DIR, check=True)


def has_command(name: str) -> bool:
    result = subprocess.run([PY, "manage.py", "help", name], cwd=PROJECT_DIR,
                            capture_output=True)
    return result.returncode == 0


def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    say(f"starting {name} (log: var/log/{name}.log)")
    return subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_processes(processes: dict[str, subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM each process (it stops its own children), SIGKILL the groups of what is left."""
    for name, process in processes.items():
        if process.poll() is None:
            say(f"stopping {name} (pid {process.pid})")
            process.terminate()
    deadline = time.monotonic() + timeout_s
    for name, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in time: killed")
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def stop_running_supervisor() -> None:
    """`make stop` from another shell: ask the running `make run` to stop what it started."""
    if not PIDS_FILE.exists():
        say("nothing to stop")
        return
    pid = json.loads(PIDS_FILE.read_text())["supervisor"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        PIDS_FILE.unlink(missing_ok=True)
        return
    say(f"asked make run (pid {pid}) to stop")
    for _ in range(600):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def readiness() -> str:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{PORT}/readyz", timeout=3) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return "server: not answering"
    checks = body.get("checks", {})
    parts = [f"{name}={'ok' if value == 'ok' else 'DOWN'}" for name, value in checks.items()]
    for key in ("outbox_pending", "outbox_dead", "consumer_lag", "dead_letters"):
        if key in body:
            parts.append(f"{key}={body[key]}")
    return " ".join(parts)


def run_demo(actions: int, processes: dict[str, subprocess.Popen[bytes]]) -> int:
    """`make demo`: traffic through the running stack, the report and the consistency check."""
    deadline = time.monotonic() + 60
    while "database=ok kafka=ok celery_broker=ok" not in readiness():
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes.values()):
            say(f"the stack did not become ready: {readiness()}")
            return 1
        time.sleep(1)
    say(f"simulating {actions} user actions")
    result = subprocess.run([PY, "manage.py", "simulate_traffic", "--base-url", f"http://{HOST}:{PORT}",
                             "--actions", str(actions), "--drain-timeout", "300"], cwd=PROJECT_DIR)
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stop", action="store_true", help="stop what a running `make run` started")
    parser.add_argument("--demo", type=int, default=None, metavar="ACTIONS",
                        help="run simulate_traffic with this many actions, report, then stop")
    options = parser.parse_args()

    if options.stop:
        stop_running_supervisor()
        return 0

    kafka_local = str(PROJECT_DIR / "scripts" / "kafka-local")
    kafka_was_running = subprocess.run([kafka_local, "status"], capture_output=True).returncode == 0
    subprocess.run([kafka_local, "start"], check=True)
    # Stop on exit only the broker this command started, not an external or earlier one.
    kafka_started_here = not kafka_was_running and (
        subprocess.run([kafka_local, "status"], capture_output=True).returncode == 0
    )
    manage("migrate", "--noinput", "-v", "0")
    manage("ensure_topics")
    if has_command("seed_demo"):
        manage("seed_demo")

    processes = {
        "server": start("server", [PY, "manage.py", "runserver", f"{HOST}:{PORT}", "--noreload"]),
        "worker": start("worker", [PY, "-m", "celery", "-A", "commerce", "worker", "--beat",
                                   "--loglevel=INFO", "--concurrency=2"]),
        "consumer": start("consumer", [PY, "manage.py", "consume_events"]),
    }
    PIDS_FILE.parent.mkdir(parents=True, exist_ok=True)
    PIDS_FILE.write_text(json.dumps({"supervisor": os.getpid(),
                                     **{name: p.pid for name, p in processes.items()}}))

    base = f"http://{HOST}:{PORT}"
    say(f"API docs:   {base}/api/docs/")
    say(f"admin:      {base}/admin/")
    say(f"dashboard:  {base}/admin/pipeline/")
    say(f"health:     {base}/readyz")
    say("Ctrl-C stops everything it started")

    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        if options.demo is not None:
            return run_demo(options.demo, processes)
        while not stopping:
            dead = [name for name, process in processes.items() if process.poll() is not None]
            if dead:
                say(f"{', '.join(dead)} exited; see var/log/. Stopping the rest.")
                exit_code = 1
                break
            print(f"[{time.strftime('%H:%M:%S')}] {readiness()}", flush=True)
            for _ in range(50):
                if stopping:
                    break
                time.sleep(0.1)
    finally:
        stop_processes(processes)
        PIDS_FILE.unlink(missing_ok=True)
        if kafka_started_here:
            subprocess.run([kafka_local, "stop"], check=False)
        say("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
