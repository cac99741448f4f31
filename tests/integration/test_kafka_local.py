"""scripts/kafka-local: one broker however often it is started, nothing left after stop, and no
download on a later start."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.fault]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka-local"


def _run(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=180)


def _brokers_on(home: Path) -> int:
    listing = subprocess.run(["pgrep", "-f", f"kafka.Kafka {home}/server.properties"],
                             capture_output=True, text=True).stdout
    return len(listing.split())


def test_start_twice_runs_one_broker_stop_leaves_none_restart_downloads_nothing(tmp_path):
    home = tmp_path / "kafka"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19292", KAFKA_HOME_DIR=str(home))
    try:
        first = _run("start", env)
        assert first.returncode == 0, first.stderr
        second = _run("start", env)
        assert second.returncode == 0 and "already running" in second.stderr
        assert _brokers_on(home) == 1
        assert _run("status", env).returncode == 0
        assert _run("stop", env).returncode == 0
        assert _brokers_on(home) == 0
        assert _run("status", env).returncode == 3
        again = _run("start", env)
        assert again.returncode == 0, again.stderr
        assert "resolving" not in again.stderr  # the cached jars, no Maven
        assert "ready at 127.0.0.1:19292" in again.stderr
    finally:
        _run("stop", env)
    assert _brokers_on(home) == 0
