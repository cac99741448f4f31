"""The relay under faults, on the real broker: a broker outage, a relay killed mid-batch, and
several relays at once on PostgreSQL."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from catalog.services import product_create, product_restock
from outbox.kafka import producer_reset
from outbox.models import OutboxEvent
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.kafka import PrivateBroker, kafka_read_all, kafka_topics_create
from tests.support.ports import free_ports_outside_ephemeral_range
from tests.support.processes import ManagedProcess, celery_worker_managed
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.relay_clients,
    pytest.mark.fault,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def _fresh_producer():
    producer_reset()
    yield
    producer_reset()


@pytest.fixture
def private_broker(settings, kafka_topics):
    # A free port pair (broker, controller) of this run's own: with a fixed port, parallel runs on
    # one machine would share (and stop) each other's private broker. Below the ephemeral range:
    # the broker restarts while clients reconnect to it.
    broker = PrivateBroker(port=free_ports_outside_ephemeral_range(2))
    try:
        # A start or a topic creation that fails still stops the broker: a JVM left running
        # would slow every later test.
        broker.start()
        settings.KAFKA_BOOTSTRAP_SERVERS = [broker.bootstrap]
        kafka_topics_create(broker.bootstrap, list(kafka_topics.values()), partitions=3)
        yield broker
    finally:
        try:
            producer_reset()
        finally:
            broker.stop()


def _sequences_by_key(records) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        payload = json.loads(record.value)
        by_key[record.key.decode()].append(payload.get("sequence", payload.get("version")))
    return by_key


def test_broker_outage_keeps_rows_pending_then_delivers_all_in_order(
    private_broker, kafka_topics, subprocess_env, tmp_path
):
    from outbox.tasks import relay_drain_task

    # given a real worker relaying to the private broker, with a short backoff
    env = dict(
        subprocess_env,
        KAFKA_BOOTSTRAP_SERVERS=private_broker.bootstrap,
        OUTBOX_BACKOFF_BASE="0.2",
        OUTBOX_BACKOFF_MAX="2",
    )
    worker = celery_worker_managed(env=env, log_path=tmp_path / "celery-worker.log")
    worker.start(timeout=60)
    # and the broker goes down; 500 events are recorded through the services
    private_broker.stop()
    products = [product_create(name=f"P{n}", price=Decimal("1.00"), stock=0) for n in range(10)]
    for _ in range(49):
        for product in products:
            product_restock(product_id=product.id, quantity=1)
    assert OutboxEvent.objects.count() == 500

    # when the worker drains during the outage
    # (a drain stops at its first failed send: each drain during the outage records one failure)
    tried = wait_for(
        lambda: (OutboxEvent.objects.aggregate(total=Sum("attempts"))["total"] or 0) >= 3,
        90,
        kick=relay_drain_task.delay,
        every_s=2.0,
    )

    # then every row stays pending, the failures are recorded with a backoff, the worker lives
    assert tried, worker.log_tail(40)
    assert OutboxEvent.objects.filter(status="pending").count() == 500
    failed = list(OutboxEvent.objects.filter(attempts__gt=0))
    assert all(row.last_error and row.available_at > row.created_at for row in failed)
    assert worker.running, worker.log_tail(40)

    # when the broker is back, the same worker delivers everything
    private_broker.start()
    delivered = wait_for(
        lambda: not OutboxEvent.objects.filter(status="pending").exists(), 120, kick=relay_drain_task.delay, every_s=1.0
    )
    assert delivered, worker.log_tail(40)
    assert worker.running
    assert OutboxEvent.objects.filter(status="published").count() == 500
    records = kafka_read_all(kafka_topics["catalog-events"], expected=500, timeout_s=60)
    assert len({r.headers["event_id"] for r in records}) == 500
    for key, versions in _sequences_by_key(records).items():
        assert versions == sorted(versions), key
        assert versions == list(range(1, 51)), key
    worker.stop()


def test_a_broker_outage_longer_than_the_attempts_allowed_kills_no_row(private_broker, kafka_topics, settings):
    from outbox.relay import relay_drain

    # given 20 rows of 4 keys, few attempts allowed and a short backoff
    settings.OUTBOX_MAX_ATTEMPTS = 2
    settings.OUTBOX_BACKOFF_BASE = 0.01
    settings.OUTBOX_BACKOFF_MAX = 0.02
    outbox_rows_bulk(topic=kafka_topics["catalog-events"], keys=4, per_key=5)
    # when the broker is down for more failed drains than OUTBOX_MAX_ATTEMPTS
    private_broker.stop()
    producer_reset()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        relay_drain()
        most = OutboxEvent.objects.order_by("-attempts").values_list("attempts", "status").first()
        if most is None or most[0] > settings.OUTBOX_MAX_ATTEMPTS or most[1] == "dead":
            break
        time.sleep(0.05)
    # then the failures are counted and backed off, and no row is dead: the cluster's
    # unavailability is not the row's fault
    assert not OutboxEvent.objects.filter(status="dead").exists(), list(
        OutboxEvent.objects.filter(status="dead").values_list("seq", "attempts", "last_error")
    )
    assert OutboxEvent.objects.filter(attempts__gt=settings.OUTBOX_MAX_ATTEMPTS).exists()
    # and once the broker is back every row is published, in order per key
    private_broker.start()
    producer_reset()
    deadline = time.monotonic() + 90
    while OutboxEvent.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        relay_drain()
        time.sleep(0.1)
    assert OutboxEvent.objects.filter(status="published").count() == 20
    records = kafka_read_all(kafka_topics["catalog-events"], expected=20, timeout_s=60)
    for key, sequences in _sequences_by_key(records).items():
        assert sequences == list(range(5)), key


def test_a_broker_outage_is_not_taken_for_a_missing_topic(private_broker, kafka_topics, settings):
    from outbox.relay import relay_drain
    from outbox.relay.send import missing_topics

    # given a relay whose producer has sent to the catalog topic only
    settings.OUTBOX_CLAIM_TTL = 20
    catalog, orders = kafka_topics["catalog-events"], kafka_topics["order-events"]
    missing_topics.forget()
    outbox_rows_bulk(topic=catalog, keys=2, per_key=1)
    assert relay_drain().published == 2
    # and rows of the order topic, whose metadata it never asked for, then more catalog rows
    outbox_rows_bulk(topic=orders, keys=3, per_key=2)
    outbox_rows_bulk(topic=catalog, keys=3, per_key=2)
    # when the broker is away during a drain (kafka-python's send then waits max_block_ms for
    # the order topic's metadata and raises the timeout a missing topic raises too)
    private_broker.stop()
    began = time.monotonic()
    result = relay_drain(time_budget_s=30)
    # then the drain stopped at its first failure as in any outage, within the batch's deadline:
    # no topic is taken for missing, no catalog row went out ahead of the cluster's return
    assert time.monotonic() - began < settings.OUTBOX_CLAIM_TTL
    assert missing_topics.topics() == set()
    assert (result.held, result.published) == (0, 0), result.as_dict()
    assert result.failed >= 1, result.as_dict()
    assert not OutboxEvent.objects.filter(status="dead").exists()
    assert OutboxEvent.objects.filter(status="pending").count() == 12
    assert not OutboxEvent.objects.filter(claim_token__isnull=False).exists()


def test_relay_killed_after_send_before_mark_loses_nothing(kafka_topics, subprocess_env, tmp_path):
    from outbox.tasks import relay_drain_task

    # given 600 rows and a worker whose relay pauses between the broker's ack and the write-back
    outbox_rows_bulk(topic=kafka_topics["catalog-events"], keys=20, per_key=30)
    env = dict(subprocess_env, OUTBOX_FAULT_PAUSE_AFTER_SEND="60", OUTBOX_CLAIM_TTL="10", OUTBOX_BATCH_SIZE="250")
    worker = celery_worker_managed(env=env, log_path=tmp_path / "worker-killed.log")
    worker.start(timeout=60)
    relay_drain_task.delay()
    paused = wait_for(lambda: "paused after send" in worker.log_tail(400), 60)
    assert paused, worker.log_tail(40)
    # when it is killed with SIGKILL there
    worker.kill()
    assert OutboxEvent.objects.filter(status="published").count() == 0
    # then, once its lease has expired, a restarted worker publishes everything
    time.sleep(10.5)
    restarted = celery_worker_managed(
        env=dict(subprocess_env, OUTBOX_BATCH_SIZE="250"), log_path=tmp_path / "worker-restarted.log"
    )
    restarted.start(timeout=60)
    drained = wait_for(
        lambda: not OutboxEvent.objects.filter(status="pending").exists(), 90, kick=relay_drain_task.delay, every_s=1.0
    )
    assert drained, restarted.log_tail(40)
    restarted.stop()
    assert OutboxEvent.objects.filter(status="published").count() == 600
    records = kafka_read_all(kafka_topics["catalog-events"], timeout_s=20)  # to the end offsets
    ids = [r.headers["event_id"] for r in records]
    in_seq_order = [str(e).encode() for e in OutboxEvent.objects.order_by("seq").values_list("event_id", flat=True)]
    assert set(ids) == set(in_seq_order)
    # the only differences are duplicates of what the killed relay had sent: the batch it was
    # about to mark, and the next one the pipeline had already handed to the producer
    duplicated = {event_id for event_id in ids if ids.count(event_id) > 1}
    assert set(in_seq_order[:250]) <= duplicated <= set(in_seq_order[:500])
    assert len(ids) == len(in_seq_order) + len(duplicated)
    for key, sequences in _sequences_by_key(records).items():
        first_seen = list(dict.fromkeys(sequences))
        assert first_seen == list(range(30)), key


@pytest.mark.parametrize("relays", [2, 4])
def test_concurrent_relays_on_postgresql_publish_everything_in_per_key_order(
    relays, kafka_topics, subprocess_env, tmp_path
):
    if connection.vendor != "postgresql":
        pytest.fail("concurrent relays are proven on PostgreSQL: run with DATABASE_URL=postgres://...")
    # given 20,000 events across 200 keys
    outbox_rows_bulk(topic=kafka_topics["catalog-events"], keys=200, per_key=100)
    # and relays whose batches (25 rows: 25 keys) leave keys to the others: a relay holds the
    # keys of up to two batches, and a key's rows go to one relay at a time. Each pauses a
    # little after every ack, so that none drains it all before the others have started.
    env = dict(subprocess_env, OUTBOX_BATCH_SIZE="25", OUTBOX_FAULT_PAUSE_AFTER_SEND="0.02")
    # when several relay processes drain at once
    processes = [
        ManagedProcess(
            name=f"relay-{n}",
            env=env,
            log_path=tmp_path / f"relay-{n}.log",
            argv=[sys.executable, "manage.py", "outbox", "drain", "--until-empty"],
        )
        for n in range(relays)
    ]
    for process in processes:
        process.start()
    for process in processes:
        assert process.wait(timeout=240) == 0, process.log_tail()
    # then every event is on the topic once, and every key's sequence reads back in order
    assert OutboxEvent.objects.exclude(status="published").count() == 0
    records = kafka_read_all(kafka_topics["catalog-events"], expected=20000, timeout_s=60)
    assert len(records) == 20000
    assert len({r.headers["event_id"] for r in records}) == 20000
    by_key = _sequences_by_key(records)
    assert len(by_key) == 200
    assert all(sequences == list(range(100)) for sequences in by_key.values())
    totals = [int(p.log_tail(5).rsplit("published ", 1)[1].split()[0]) for p in processes]
    assert sum(totals) == 20000, totals
    assert all(total > 0 for total in totals), totals  # they really did share the work
