"""`make restart-<name>` stops one component as `make stop` does, and `make run` starts it again.

The Celery worker is the case that mattered: SIGTERM to its whole process group reached its pool
children too, and the worker's own shutdown then hung for good (billiard's
`_help_stuff_finish`) while the status line still said `worker=up`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

import run_local
from run import supervisor as supervision
from run.supervisor import Component, Supervisor, group_alive

# A component with a child in its group, stopped as a Celery worker stops: on SIGTERM the main
# process tells its child to finish (SIGUSR1), waits for it, then exits. A child that gets a
# SIGTERM itself notes it (the marker file) and dies.
WORKER_LIKE = """
import os, signal, subprocess, sys, time
marker = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c", '''
import os, signal, sys, time
def terminated(*_):
    open(sys.argv[1], "w").write("SIGTERM")
    os._exit(1)
signal.signal(signal.SIGTERM, terminated)
signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))
time.sleep(300)
''', marker])
def stop(*_):
    child.send_signal(signal.SIGUSR1)
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("up", flush=True)
time.sleep(300)
"""

DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def supervised(tmp_path: Path, monkeypatch):
    """A supervisor of one component named worker, with the pids file `make restart-worker` reads."""
    started: list[Supervisor] = []
    said: list[str] = []
    monkeypatch.setattr(run_local, "say", said.append)

    def start(argv: list[str]) -> tuple[Supervisor, Component, list[str]]:
        component = Component("worker", argv, tmp_path / "worker.log", tmp_path)
        supervisor = Supervisor([component], lambda message: None)
        supervisor.start_all()
        started.append(supervisor)
        _until(lambda: "up" in component.log_path.read_text())
        pids = tmp_path / "run_local.json"
        pids.write_text(
            json.dumps({"supervisor": run_local.os.getpid(), "components": {"worker": {"pid": component.pid}}})
        )
        monkeypatch.setattr(run_local, "PIDS_FILE", pids)
        return supervisor, component, said

    yield start
    for supervisor in started:
        supervisor.stop_all(timeout_s=5)


def test_a_restart_stops_the_main_process_which_stops_its_children_then_it_runs_again(tmp_path, supervised):
    # given
    marker = tmp_path / "child-got-sigterm"
    supervisor, component, said = supervised([sys.executable, "-c", WORKER_LIKE, str(marker)])
    old_pid = component.pid
    assert old_pid is not None
    # when
    assert run_local.restart_component("worker") == 0
    alive_after_the_restart_returned = group_alive(old_pid)
    _until(lambda: not group_alive(old_pid), timeout=5)
    # then: only the main process was signalled; it stopped its child and exited by itself,
    # before the restart returned
    assert not marker.exists(), "the restart sent SIGTERM to the component's children too"
    assert not alive_after_the_restart_returned
    assert f"stopped worker (pid {old_pid}); make run starts it again" in said

    # and its supervisor starts it again
    def restarted() -> bool:
        supervisor.check()
        return component.restarts == 1 and component.running and component.pid != old_pid

    _until(restarted)


def test_a_component_that_does_not_stop_is_killed_with_its_group(supervised, monkeypatch):
    # given a component that ignores SIGTERM (a shutdown that hangs)
    monkeypatch.setattr(supervision, "STOP_TIMEOUT_S", 1.0)
    supervisor, component, said = supervised([sys.executable, "-c", DEAF])
    old_pid = component.pid
    assert old_pid is not None
    # when
    started = time.monotonic()
    assert run_local.restart_component("worker") == 0
    # then: killed once the timeout ran out, said so, and started again
    assert time.monotonic() - started < 10
    assert not group_alive(old_pid)
    assert f"worker (pid {old_pid}) did not stop in 1 s: killed; make run starts it again" in said

    def restarted() -> bool:
        supervisor.check()
        return component.restarts == 1 and component.running

    _until(restarted)
