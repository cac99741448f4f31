"""The relay on a 3-broker cluster (replication factor 3, min.insync.replicas 2) while brokers die:
a partition leader killed under load, two of three brokers stopped, the active controller killed.

A real Celery worker relays; the test kicks it like the on-commit kick would. It pauses a little
after each acknowledgement (OUTBOX_FAULT_PAUSE_AFTER_SEND) so that the faults land mid-drain.
"""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from outbox.models import OutboxEvent
from tests.cluster.readback import published_everything_in_order
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.processes import celery_worker_managed
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.relay_clients,
    pytest.mark.fault,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
]


def _published() -> int:
    return OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED).count()


def _pending() -> int:
    return OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count()


def _kick() -> None:
    from outbox.tasks import relay_drain_task

    relay_drain_task.delay()


def _relay_worker(cluster_env: dict[str, str], tmp_path, *, batch: int, pause_s: float):
    env = dict(
        cluster_env,
        OUTBOX_BATCH_SIZE=str(batch),
        OUTBOX_FAULT_PAUSE_AFTER_SEND=str(pause_s),
        OUTBOX_BACKOFF_BASE="0.2",
        OUTBOX_BACKOFF_MAX="2",
    )
    worker = celery_worker_managed(env=env, log_path=tmp_path / "celery-worker.log")
    worker.start(timeout=60)
    return worker


def test_leader_of_the_busiest_partition_killed_under_load(cluster, cluster_topics, cluster_env, tmp_path):
    topic = cluster_topics["catalog-events"]
    # given 20,000 events over 500 keys, and a worker draining them to the cluster
    outbox_rows_bulk(topic=topic, keys=500, per_key=40)
    worker = _relay_worker(cluster_env, tmp_path, batch=250, pause_s=0.1)
    assert wait_for(lambda: _published() >= 3000, 120, kick=_kick), worker.log_tail(40)

    # when the leader of the busiest partition so far is SIGKILLed
    by_partition = Counter(
        OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED).values_list("kafka_partition", flat=True)
    )
    busiest = by_partition.most_common(1)[0][0]
    leader = cluster.leaders(topic)[busiest]
    cluster.kill(leader)
    published_at_kill = _published()
    assert published_at_kill < 17000  # the kill landed mid-drain

    # then an in-sync follower takes over and the drain goes on without the dead broker
    cluster.wait_until(
        lambda: cluster.leaders(topic)[busiest] not in (leader, -1), 60, f"a new leader of partition {busiest}"
    )
    assert wait_for(lambda: _published() >= min(20000, published_at_kill + 3000), 120, kick=_kick), worker.log_tail(40)
    # and once the broker is back, everything is delivered
    cluster.start(leader)
    assert wait_for(lambda: _pending() == 0, 240, kick=_kick), worker.log_tail(40)
    assert worker.running
    worker.stop()
    published_everything_in_order(topic, keys=500, per_key=40)


def test_two_of_three_brokers_stopped_nothing_acknowledged_then_everything_in_order(
    cluster, cluster_topics, cluster_env, tmp_path
):
    topic = cluster_topics["catalog-events"]
    # given 3,000 events over 100 keys being drained
    outbox_rows_bulk(topic=topic, keys=100, per_key=30)
    worker = _relay_worker(cluster_env, tmp_path, batch=100, pause_s=0.2)
    assert wait_for(lambda: _published() >= 300, 120, kick=_kick), worker.log_tail(40)

    # when two of the three brokers stop, one after the other (each hands its leaderships and
    # its ISR places over as it shuts down: the survivor ends as the only in-sync replica)
    controller = cluster.controller()
    first, second = [node for node in (1, 2, 3) if node != controller][:2]
    cluster.stop(first)
    cluster.stop(second)

    # then the relay records retriable failures with a backoff, and nothing more is
    # acknowledged: no record is published with fewer than two replicas
    failed = wait_for(lambda: OutboxEvent.objects.filter(attempts__gte=1).exists(), 120, kick=_kick)
    assert failed, worker.log_tail(40)
    # (counted from the first failure on, and a moment after it: acknowledgements the brokers
    # sent before the in-sync replicas shrank are written back by then, however slow the machine)
    wait_for(lambda: False, 2)
    published_when_alone = _published()
    assert published_when_alone < 3000  # the stops landed mid-drain
    wait_for(lambda: False, 5, kick=_kick)
    assert _published() == published_when_alone
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.DEAD).count() == 0
    failing = list(OutboxEvent.objects.filter(attempts__gte=1))
    assert all(row.status == OutboxEvent.Status.PENDING and row.last_error for row in failing)
    assert all(row.available_at > row.created_at for row in failing)
    assert worker.running, worker.log_tail(40)

    # when they are back, everything arrives, in order
    cluster.start()
    assert wait_for(lambda: _pending() == 0, 240, kick=_kick), worker.log_tail(40)
    worker.stop()
    published_everything_in_order(topic, keys=100, per_key=30)


def test_active_controller_killed_a_new_one_is_elected_and_the_drain_completes(
    cluster, cluster_topics, cluster_env, tmp_path
):
    topic = cluster_topics["catalog-events"]
    # given 10,000 events over 250 keys being drained
    outbox_rows_bulk(topic=topic, keys=250, per_key=40)
    worker = _relay_worker(cluster_env, tmp_path, batch=250, pause_s=0.1)
    assert wait_for(lambda: _published() >= 2000, 120, kick=_kick), worker.log_tail(40)

    # when the active controller is SIGKILLed
    controller = cluster.controller()
    cluster.kill(controller)
    killed_at = timezone.now()
    assert _pending() > 0  # the kill landed mid-drain

    # then the quorum elects another one, and the drain completes without it
    cluster.wait_until(lambda: cluster.controller() not in (controller, -1), 60, "a new controller")
    assert wait_for(lambda: _pending() == 0, 240, kick=_kick), worker.log_tail(40)
    assert OutboxEvent.objects.filter(published_at__gt=killed_at).exists()
    worker.stop()
    published_everything_in_order(topic, keys=250, per_key=40)
    cluster.start(controller)
