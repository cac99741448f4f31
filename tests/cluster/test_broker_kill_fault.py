"""The `broker_kill` fault of the fault campaign (`make chaos KAFKA_BROKERS=3`), on the cluster."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.kafka import PROJECT_DIR, broker_kill, broker_kill_draw

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.cluster]


def _pids(cluster) -> dict[int, int]:
    status = subprocess.run(
        [str(PROJECT_DIR / "scripts" / "kafka-local"), "status"],
        env=cluster.env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {int(node): int(pid) for node, pid in re.findall(r"node (\d) running \(pid (\d+)\)", status)}


def test_broker_kill_crashes_the_node_the_seed_draws_and_brings_it_back(cluster):
    before = _pids(cluster)
    assert len(before) == 3
    node = broker_kill(cluster, seed=7, moment=12.5, down_s=1.0)
    after = _pids(cluster)
    assert set(after) == {1, 2, 3}
    assert cluster.running()
    assert after[node] != before[node]
    assert all(after[other] == before[other] for other in after if other != node)
    # the seed and the moment draw the node: a campaign's faults replay, and every node is drawn
    assert node == broker_kill_draw(seed=7, moment=12.5, brokers=3)
    assert {broker_kill_draw(seed=7, moment=moment, brokers=3) for moment in range(30)} == {1, 2, 3}
