"""The processes of `make run`, each in a process group of its own, restarted when one dies.

Why not honcho (or foreman): a Procfile runner stops every process when one exits, which is the
behaviour this replaces, and it restarts nothing. What is needed here is small: restart with
backoff, count restarts, reap the whole process group of a dead component (a SIGKILLed Celery
worker leaves its pool children behind), and report a component that keeps dying with the tail
of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# A component that stayed up this long is healthy again: its next death restarts it at once.
HEALTHY_AFTER_S = 30.0
# How long a component asked to stop from outside its supervisor (`make restart-<name>`) may
# take before its whole group is killed: a Celery worker's warm shutdown waits for its tasks.
STOP_TIMEOUT_S = 30.0
# Deaths in a row after which a component "keeps dying" and its log tail is shown.
CRASH_LOOP_DEATHS = 3
LOG_TAIL_LINES = 15


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies, already dead, are not counted)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # "pid (command) state ppid pgrp ...": the command may hold spaces and parentheses
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def group_kill(pgid: int, wait_s: float = 5.0) -> None:
    """SIGKILL a process group and wait until none of it runs."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + wait_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def component_stop(pid: int) -> bool:
    """Stop one component from outside its supervisor, as `stop_all` does: SIGTERM to its main
    process only, which stops its own children (a Celery worker whose pool children get the
    SIGTERM too hangs in its shutdown, in billiard's `_help_stuff_finish`, and never exits);
    SIGKILL to its whole group if any of it still runs after `STOP_TIMEOUT_S`. True when it
    stopped by itself. (Its supervisor reaps it, and starts it again.)"""
    try:
        if os.getpgid(pid) != pid:
            return True  # not a component (each leads its own group): its pid was reused
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while group_alive(pid):
        if time.monotonic() >= deadline:
            group_kill(pid)
            return False
        time.sleep(0.05)
    return True


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    deaths_in_a_row: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    last_exit: int | None = None
    reported_loop: bool = False
    # Where this `make run`'s lines begin in the log, which earlier runs' lines precede (the
    # log is appended to): a crash loop's report shows this run's lines only.
    log_start: int | None = None
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        if self.log_start is None:
            self.log_start = log.seek(0, os.SEEK_END)
        # Its own session: Ctrl-C in the terminal reaches only `make run`, which stops the
        # components in order, and a component's children share its group, reaped with it.
        self.popen = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started_at = time.monotonic()
        self.restart_at = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(self.log_start or 0, log.tell() - 16384))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def state(self) -> str:
        if self.running:
            return "up"
        if self.restart_at is not None:
            return f"restarting in {max(0.0, self.restart_at - time.monotonic()):.0f}s"
        return "down"


class Supervisor:
    """Starts the components, restarts the dead ones with backoff, stops them all on request."""

    def __init__(
        self, components: list[Component], say: Callable[[str], None], on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.components = {c.name: c for c in components}
        self.say = say
        self.on_change = on_change

    def start_all(self) -> None:
        for component in self.components.values():
            self.say(f"starting {component.name} (log: {component.log_path.relative_to(component.cwd)})")
            component.start()
        self.on_change()

    def check(self) -> None:
        """Notice deaths, reap their groups, schedule and perform restarts."""
        now = time.monotonic()
        changed = False
        for c in self.components.values():
            if c.popen is not None and c.restart_at is None and c.popen.poll() is not None:
                changed = True
                c.last_exit = c.popen.returncode
                # Whatever the component left in its group (pool children, a beat child) goes too.
                group_kill(c.popen.pid)
                if now - c.started_at >= HEALTHY_AFTER_S:
                    c.deaths_in_a_row = 0
                    c.reported_loop = False
                c.deaths_in_a_row += 1
                delay = (
                    0.0
                    if c.deaths_in_a_row == 1
                    else min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (c.deaths_in_a_row - 2))
                )
                c.restart_at = now + delay
                self.say(
                    f"{c.name} exited with {_exit_text(c.last_exit)}; restarting "
                    f"{'now' if delay == 0 else f'in {delay:.0f} s'} "
                    f"(restart {c.restarts + 1}, log: {c.log_path.relative_to(c.cwd)})"
                )
                if c.deaths_in_a_row >= CRASH_LOOP_DEATHS and not c.reported_loop:
                    c.reported_loop = True
                    self.say(
                        f"{c.name} keeps dying ({c.deaths_in_a_row} times in a row); "
                        f"the end of {c.log_path.relative_to(c.cwd)}:"
                    )
                    for line in c.log_tail():
                        print(f"    {c.name}| {line}", flush=True)
            if c.restart_at is not None and now >= c.restart_at:
                changed = True
                c.restarts += 1
                c.start()
        if changed:
            self.on_change()

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """SIGTERM each component (each stops its own children), then SIGKILL what is left."""
        running = [(c, c.popen) for c in self.components.values() if c.popen is not None]
        for c, popen in running:
            if c.running:
                self.say(f"stopping {c.name} (pid {c.pid})")
                popen.terminate()
            c.restart_at = None
        deadline = time.monotonic() + timeout_s
        for c, popen in running:
            try:
                popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{c.name} did not stop in {timeout_s:.0f} s: killed")
            # Also when it stopped cleanly: a child it left behind must not outlive `make run`.
            group_kill(popen.pid)
            popen.wait()
        self.on_change()

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {c.name: {"pid": c.pid, "restarts": c.restarts, "state": c.state()} for c in self.components.values()}

    def summary(self) -> str:
        parts = []
        for c in self.components.values():
            state = c.state()
            text = f"{c.name}={'up' if state == 'up' else state.upper()}"
            if c.restarts:
                text += f"(restarts {c.restarts})"
            parts.append(text)
        return " ".join(parts)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
