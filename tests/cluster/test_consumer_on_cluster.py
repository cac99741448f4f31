"""The back office on the 3-broker cluster: a group of three `consume_events` processes while the
broker that coordinates their group, and leads some of their partitions, is killed and restarted:
both the coordinator and those partitions' leaders move."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from backoffice.models import InboxEntry
from commerce.dashboard import consumer_lag
from tests.backoffice.stream import produce, projections_differences, stream_make
from tests.support.processes import consume_events_managed

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def _handled(group: str) -> int:
    return InboxEntry.objects.filter(consumer_group=group).count()


def _wait_for_handled(group: str, count: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while _handled(group) < count and time.monotonic() < deadline:
        time.sleep(0.3)
    return _handled(group)


def test_group_of_three_rides_the_coordinator_killed_and_restarted(cluster, cluster_topics, cluster_env, tmp_path):
    # given a stream on the cluster, and three consumers of one group reading it
    records, expected = stream_make(events=9000, seed=21)
    group = f"g-{uuid.uuid4().hex[:6]}"
    produce(records[:6000], cluster_topics)
    members = [
        consume_events_managed(name=f"member-{n}", env=cluster_env, log_path=tmp_path / f"member-{n}.log", group=group)
        for n in range(3)
    ]
    for member in members:
        member.start()
    assert _wait_for_handled(group, 600, 120) >= 600, members[0].log_tail()

    # when the broker that coordinates the group is SIGKILLed mid-stream, more events arrive
    # while it is down, and it comes back
    coordinator = cluster.group_coordinator(group)
    led_before = {
        (topic, partition)
        for topic in cluster_topics.values()
        for partition, leader in cluster.leaders(topic).items()
        if leader == coordinator
    }
    assert led_before, "the coordinator leads none of the group's partitions: no leader move tested"
    cluster.kill(coordinator)
    assert _handled(group) < len(records)
    produce(records[6000:], cluster_topics)
    cluster.wait_until(lambda: cluster.group_coordinator(group) != coordinator, 60, "a new coordinator")
    assert all(cluster.leaders(topic)[partition] != coordinator for topic, partition in led_before)
    _wait_for_handled(group, 7000, 120)
    cluster.start(coordinator)

    # then every event is applied exactly once, and the group's committed offsets reach the end
    assert _wait_for_handled(group, len(records), 180) == len(records), members[0].log_tail()
    assert all(member.running for member in members)
    for member in members:
        assert member.stop() == 0, member.log_tail()
    assert projections_differences(expected) == []
    lag = consumer_lag(group)
    assert not isinstance(lag, str), lag
    assert sum(partition.lag for partition in lag) == 0
    # each member logged what it polled and how many of those were duplicates: the coordinator
    # move redelivered at most the batches in flight, it did not send anyone back to the start
    duplicates = 0
    for member in members:
        match = re.search(r"consumed (\d+): applied (\d+), duplicates (\d+)", member.log_path.read_text())
        assert match, member.log_tail()
        duplicates += int(match.group(3))
    assert duplicates < 1000, duplicates
