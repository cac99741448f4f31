"""Real subprocesses for tests: a Celery worker, `consume_events`, started and stopped for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def database_url_for_subprocess(database: dict[str, Any]) -> str:
    """The URL of the database the test runs on (the test database), for a child process."""
    engine = database["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    if engine.endswith("postgresql"):
        user = database.get("USER") or ""
        password = database.get("PASSWORD") or ""
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = database.get("HOST") or "127.0.0.1"
        port = database.get("PORT") or "5432"
        return f"postgres://{auth}{host}:{port}/{database['NAME']}"
    raise ValueError(f"no URL form for database engine {engine}")


class ManagedProcess:
    """A child process with its output in a log file; waits for a line that says it is ready.

    Every started process is remembered, so that a test that fails half-way still leaves none
    behind (tests/conftest.py kills the survivors after each test).
    """

    started: list[ManagedProcess] = []

    def __init__(
        self,
        *,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        ready_text: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready_text = ready_text
        self.cwd = cwd or Path(__file__).resolve().parents[2]
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60.0) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        start_offset = self.log_path.stat().st_size
        self.popen = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        ManagedProcess.started.append(self)
        if self.ready_text is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The log first: a process that got ready and then died between two looks (a worker
            # whose first drain kills it, as the fault tests want) did start.
            exited = self.popen.poll() is not None
            with open(self.log_path, "rb") as log:
                log.seek(start_offset)
                if self.ready_text.encode() in log.read():
                    return
            if exited:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, as a crash."""
        if self.running and self.popen is not None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self, *, timeout: float = 30.0) -> int | None:
        if self.popen is None:
            return None
        if self.running:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=30)
        self._log.close()
        return self.popen.returncode

    @classmethod
    def kill_survivors(cls) -> None:
        while cls.started:
            process = cls.started.pop()
            process.kill()
            if not process._log.closed:
                process._log.close()

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def celery_worker_managed(*, env: dict[str, str], log_path: Path) -> ManagedProcess:
    """A real Celery worker (solo pool, no beat); `--purge` drops messages left by earlier tests."""
    return ManagedProcess(
        name="celery-worker",
        argv=[
            sys.executable,
            "-m",
            "celery",
            "-A",
            "commerce",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--purge",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        log_path=log_path,
        ready_text="ready.",
    )


def consume_events_managed(
    *, name: str, env: dict[str, str], log_path: Path, group: str, extra: tuple[str, ...] = ()
) -> ManagedProcess:
    """`manage.py consume_events` in batches of 50 with a progress line every second, ready once
    it says it is consuming."""
    return ManagedProcess(
        name=name,
        env=env,
        log_path=log_path,
        ready_text="consuming",
        argv=[
            sys.executable,
            "manage.py",
            "consume_events",
            "--group",
            group,
            "--batch-size",
            "50",
            "--progress-every",
            "1",
            *extra,
        ],
    )
