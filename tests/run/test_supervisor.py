"""make run's supervisor on real child processes: restarts with backoff, reaps, reports loops."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from run import supervisor as supervision
from run.supervisor import Component, Supervisor, group_alive


def _supervise(tmp_path: Path, name: str, code: str) -> tuple[Supervisor, list[str]]:
    said: list[str] = []
    component = Component(name, [sys.executable, "-c", code], tmp_path / f"{name}.log", tmp_path)
    return Supervisor([component], said.append), said


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(supervision, "BACKOFF_FIRST_S", 0.2)
    monkeypatch.setattr(supervision, "BACKOFF_MAX_S", 0.4)


def test_a_component_that_keeps_dying_is_restarted_with_backoff_and_reported_with_its_log(
    tmp_path, fast_backoff, capsys
):
    # given a component that fails at once, every time
    sup, said = _supervise(tmp_path, "consumer", "print('cannot reach the broker', flush=True); raise SystemExit(3)")
    sup.start_all()
    component = sup.components["consumer"]

    # when the supervisor watches it
    def watch() -> bool:
        sup.check()
        return component.restarts >= 4

    _until(watch)
    sup.stop_all()

    # then it was restarted, each death said with its exit code, then reported with its log tail
    assert any("consumer exited with code 3; restarting now (restart 1" in line for line in said)
    assert any("restarting in 1 s" in line or "restarting in 0 s" in line for line in said)
    assert any("consumer keeps dying (3 times in a row)" in line for line in said)
    assert "consumer| cannot reach the broker" in capsys.readouterr().out
    assert "consumer=" in sup.summary()
    assert f"(restarts {component.restarts})" in sup.summary()


def test_a_crash_loop_is_reported_with_this_runs_lines_not_an_earlier_runs(tmp_path, fast_backoff, capsys):
    # given the log of an earlier make run (logs are appended to), ending with its own error
    (tmp_path / "server.log").write_text("OverflowError: bind(): port must be 0-65535.\n" * 20)
    sup, _ = _supervise(
        tmp_path, "server", "print('Error: That port is already in use.', flush=True); raise SystemExit(1)"
    )
    sup.start_all()
    component = sup.components["server"]

    # when it keeps dying
    def watch() -> bool:
        sup.check()
        return component.reported_loop

    _until(watch)
    sup.stop_all()

    # then the report shows what this run's server said, none of the earlier run's error
    printed = capsys.readouterr().out
    assert "server| Error: That port is already in use." in printed
    assert "OverflowError" not in printed


def test_a_killed_component_is_restarted_and_what_it_left_in_its_group_is_reaped(tmp_path):
    # given a component with a child of its own (as a Celery worker has its pool)
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        "print('up', flush=True); time.sleep(300)"
    )
    sup, said = _supervise(tmp_path, "worker", code)
    sup.start_all()
    component = sup.components["worker"]
    first_pid = component.pid
    assert first_pid is not None
    _until(lambda: "up" in component.log_path.read_text())

    # when its main process is killed, not its child
    os.kill(first_pid, signal.SIGKILL)

    def restarted() -> bool:
        sup.check()
        return component.restarts == 1 and component.running

    _until(restarted)

    # then the orphaned child is gone with its group, and a new process runs
    assert not group_alive(first_pid)
    assert component.pid != first_pid
    assert any("worker exited with signal SIGKILL; restarting now (restart 1" in line for line in said)
    sup.stop_all()


def test_stopping_leaves_no_process_even_one_that_outlives_its_parent(tmp_path):
    # given a component whose child ignores SIGTERM and would outlive it
    code = (
        "import signal, subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)']); "
        "print('up', flush=True); time.sleep(300)"
    )
    sup, _ = _supervise(tmp_path, "beat", code)
    sup.start_all()
    component = sup.components["beat"]
    _until(lambda: "up" in component.log_path.read_text())
    pgid = component.pid
    assert pgid is not None

    # when
    sup.stop_all(timeout_s=5)

    # then
    assert not group_alive(pgid)
