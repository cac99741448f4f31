"""scripts/kafka-local: one broker however often it is started, nothing left after stop, and no
download on a later start; with KAFKA_BROKERS=3, a cluster whose nodes are listed, killed,
started and stopped by id."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.fault]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka-local"


def _run(action: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), action, *args], env=env, check=False, capture_output=True, text=True, timeout=180
    )


def _brokers_on(home: Path, *, pattern: str | None = None) -> int:
    listing = subprocess.run(
        ["pgrep", "-f", pattern or f"kafka.Kafka {home}/server.properties"], check=False, capture_output=True, text=True
    ).stdout
    return len(listing.split())


def test_start_twice_runs_one_broker_stop_leaves_none_restart_downloads_nothing(tmp_path):
    home = tmp_path / "kafka"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19292", KAFKA_HOME_DIR=str(home))
    try:
        first = _run("start", env)
        assert first.returncode == 0, first.stderr
        second = _run("start", env)
        assert second.returncode == 0
        assert "already running" in second.stderr
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


def test_cluster_of_three_nodes_starts_lists_kills_and_restarts_one_by_id_and_stops_all(tmp_path):
    home = tmp_path / "cluster"
    base = int(os.environ.get("KAFKA_LOCAL_TEST_CLUSTER_PORT", "9750"))
    env = dict(os.environ, KAFKA_BROKERS="3", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{base}", KAFKA_HOME_DIR=str(home))
    nodes = f"kafka.Kafka {home}/node-"
    try:
        started = _run("start", env)
        assert started.returncode == 0, started.stderr
        assert f"ready at 127.0.0.1:{base} 127.0.0.1:{base + 2} 127.0.0.1:{base + 4}" in started.stderr
        assert _brokers_on(home, pattern=nodes) == 3
        assert _run("bootstrap", env).stdout.strip() == f"127.0.0.1:{base},127.0.0.1:{base + 2},127.0.0.1:{base + 4}"
        status = _run("status", env)
        assert status.returncode == 0
        assert status.stdout.count(" running (pid ") == 3
        controller = int(_run("controller", env).stdout)
        assert f"node {controller} running" in status.stdout
        assert "(active controller)" in status.stdout

        # one node killed by id: the others stay, status says which one is missing
        victim = 1 if controller != 1 else 2
        assert _run("kill", env, str(victim)).returncode == 0
        assert _brokers_on(home, pattern=nodes) == 2
        status = _run("status", env)
        assert status.returncode == 3
        assert f"node {victim} not running" in status.stdout
        # started again by id: it rejoins (start waits until it is registered)
        again = _run("start", env, str(victim))
        assert again.returncode == 0, again.stderr
        assert _run("status", env).returncode == 0
        # a clean stop of one node by id, then of all
        assert _run("stop", env, "3").returncode == 0
        assert _brokers_on(home, pattern=nodes) == 2
        assert _run("stop", env).returncode == 0
        assert _brokers_on(home, pattern=nodes) == 0
    finally:
        _run("stop", env)
    assert _brokers_on(home, pattern=nodes) == 0
