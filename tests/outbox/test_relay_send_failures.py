"""A send that fails stops the batch, on the real broker: a topic deleted in the middle of a drain
(the relay's producer never auto-creates topics), and a producer left in a fatal state."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone
from kafka import KafkaProducer
from kafka.errors import ClusterAuthorizationFailedError

from outbox.kafka import producer_close, producer_get, producer_own, producer_reset
from outbox.models import OutboxEvent
from outbox.relay import DrainResult, relay_drain
from outbox.relay.send import missing_topics
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.kafka import kafka_read_all, kafka_topics_create, kafka_topics_delete

pytestmark = [pytest.mark.integration, pytest.mark.relay_clients, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_producer():
    producer_reset()
    missing_topics.forget()
    yield
    producer_reset()
    missing_topics.forget()


def _drain_in_thread(timeout_s: float, *, time_budget_s: float) -> tuple[DrainResult | None, float]:
    """One drain in a thread; returns (its result or None if it was still running, seconds)."""
    out: list[DrainResult] = []

    def drain() -> None:
        try:
            out.append(relay_drain(time_budget_s=time_budget_s))
        finally:
            connection.close()

    thread = threading.Thread(target=drain, daemon=True)
    began = time.monotonic()
    thread.start()
    thread.join(timeout_s)
    return (out[0] if out else None), time.monotonic() - began


@pytest.mark.fault
def test_a_topic_deleted_mid_drain_stops_the_drain_within_its_lease_and_order_holds(
    kafka_topics, kafka_bootstrap, settings
):
    # given 2,000 rows over 20 keys and a relay with a 20 s lease that pauses after each batch
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=20, per_key=100)
    settings.OUTBOX_CLAIM_TTL = 20
    settings.OUTBOX_BATCH_SIZE = 50
    settings.OUTBOX_BACKOFF_BASE, settings.OUTBOX_BACKOFF_MAX = 0.1, 0.5
    settings.OUTBOX_FAULT_PAUSE_AFTER_SEND = 0.3
    # when the topic is deleted while the drain runs (after its first batches are published)
    deleted_at: list[float] = []

    def delete_when_moving() -> None:
        try:
            deadline = time.monotonic() + 30
            while OutboxEvent.objects.filter(status="published").count() < 100:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            kafka_topics_delete(kafka_bootstrap, [topic])
            deleted_at.append(time.monotonic())
        finally:
            connection.close()

    deleter = threading.Thread(target=delete_when_moving)
    deleter.start()
    first, _ = _drain_in_thread(120, time_budget_s=60)
    deleter.join()
    assert deleted_at, "the topic was never deleted: the drain did not move"
    # then the drain returned within its lease of the deletion, and later drains as well, while
    # the topic is missing (each refused send may block max_block_ms, never a whole batch of them)
    assert first is not None
    published_before = set(OutboxEvent.objects.filter(status="published").values_list("seq", flat=True))
    assert 0 < len(published_before) < 2000
    for _ in range(2):
        OutboxEvent.objects.filter(status="pending").update(available_at=timezone.now())
        result, seconds = _drain_in_thread(settings.OUTBOX_CLAIM_TTL + 5, time_budget_s=60)
        assert result is not None, "a drain outlived its lease against a missing topic"
        assert seconds < settings.OUTBOX_CLAIM_TTL
        assert result.published == 0
        assert result.failed >= 1
    assert not OutboxEvent.objects.filter(status="dead").exists()
    # nothing was marked published while the topic was gone, and nothing held is left leased
    assert set(OutboxEvent.objects.filter(status="published").values_list("seq", flat=True)) == published_before
    assert not OutboxEvent.objects.filter(status="pending", claim_token__isnull=False).exists()

    # when the topic is back (made by the operator: the relay does not auto-create it)
    kafka_topics_create(kafka_bootstrap, [topic], partitions=3)
    deadline = time.monotonic() + 90
    while OutboxEvent.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        relay_drain(time_budget_s=5)
        time.sleep(0.2)
    # then everything is delivered, and on the new topic every key's rows come in order,
    # starting right after the last one the old topic had acknowledged
    assert not OutboxEvent.objects.exclude(status="published").exists()
    sequence_of = {}
    last_before: dict[str, int] = defaultdict(lambda: -1)
    for seq, key, payload in OutboxEvent.objects.values_list("seq", "key", "payload"):
        sequence_of[seq] = payload["sequence"]
        if seq in published_before:
            last_before[key] = max(last_before[key], payload["sequence"])
    records = kafka_read_all(topic, timeout_s=30)
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        assert record.key is not None  # every outbox record is keyed by its aggregate
        by_key[record.key.decode()].append(json.loads(record.value)["sequence"])
    for key in map(str, range(1, 21)):
        first_seen = list(dict.fromkeys(by_key[key]))
        assert first_seen == list(range(last_before[key] + 1, 100)), (key, first_seen[:5], last_before[key])


@pytest.mark.fault
def test_a_missing_topic_holds_back_its_own_rows_and_no_other_topic(kafka_topics, kafka_bootstrap, settings):
    # given the order topic deleted (the relay never creates topics), its 20 rows the oldest
    # pending, then 200 rows for the catalog topic on keys of their own (a key's rows go out in
    # order across topics: a catalog row keyed like a held order row would wait with it)
    catalog, orders = kafka_topics["catalog-events"], kafka_topics["order-events"]
    kafka_topics_delete(kafka_bootstrap, [orders])
    outbox_rows_bulk(topic=orders, keys=5, per_key=4)
    OutboxEvent.objects.filter(topic=orders).update(key=Concat(Value("order-"), F("key")))
    outbox_rows_bulk(topic=catalog, keys=10, per_key=20)
    settings.OUTBOX_BATCH_SIZE = 50
    settings.OUTBOX_BACKOFF_BASE, settings.OUTBOX_BACKOFF_MAX = 30, 60
    # when drains run, as the relay loop's do, for up to 30 s
    began, drains = time.monotonic(), []
    while time.monotonic() - began < 30:
        result, _ = _drain_in_thread(60, time_budget_s=30)
        assert result is not None
        drains.append(result)
        if OutboxEvent.objects.filter(topic=catalog, status="published").count() == 200:
            break
    spent = time.monotonic() - began
    # then every catalog row went out in one drain (two with confluent-kafka: its refusal comes
    # in a delivery report, which drops the producer and ends that drain), in order per key
    # (before: every batch stopped at the missing topic's oldest row, no catalog row went out)
    assert OutboxEvent.objects.filter(topic=catalog, status="published").count() == 200, [d.as_dict() for d in drains]
    assert len(drains) <= (2 if settings.KAFKA_CLIENT == "confluent" else 1), [d.as_dict() for d in drains]
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in kafka_read_all(catalog, timeout_s=30):
        assert record.key is not None
        by_key[record.key.decode()].append(json.loads(record.value)["sequence"])
    assert {key: list(dict.fromkeys(sequences)) for key, sequences in by_key.items()} == {
        str(key): list(range(20)) for key in range(1, 11)
    }
    # the cluster was asked for the missing topic once (each ask blocks max_block_ms), not
    # once per row; its rows wait in backoff, pending (never dead: the topic may come back)
    assert spent < 15, spent
    assert not OutboxEvent.objects.filter(topic=orders).exclude(status="pending").exists()
    waiting = OutboxEvent.objects.filter(topic=orders)
    # (each key's oldest row failed into its backoff, the key's later rows were not sent; a
    # missing topic is not the row's attempt, but confluent-kafka's first refusal comes as an
    # ordinary failed delivery)
    failed = [row for row in waiting if row.last_error]
    assert len(failed) == 5
    assert all(row.attempts <= 1 for row in waiting)
    assert all("order-events" in row.last_error or "UnknownTopicOrPartition" in row.last_error for row in failed)
    assert not OutboxEvent.objects.filter(claim_token__isnull=False).exists()

    # when the topic is made again (by the operator) and the backoff has passed
    kafka_topics_create(kafka_bootstrap, [orders], partitions=3)
    OutboxEvent.objects.filter(status="pending").update(available_at=timezone.now())
    deadline = time.monotonic() + 60
    while OutboxEvent.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        relay_drain(time_budget_s=5)
        time.sleep(0.2)
    # then its rows go out too, in order per key
    assert not OutboxEvent.objects.exclude(status="published").exists()
    by_key = defaultdict(list)
    for record in kafka_read_all(orders, timeout_s=30):
        assert record.key is not None
        by_key[record.key.decode()].append(json.loads(record.value)["sequence"])
    assert {key: list(dict.fromkeys(sequences)) for key, sequences in by_key.items()} == {
        f"order-{key}": list(range(4)) for key in range(1, 6)
    }


def _missing_orders_topic(kafka_topics, kafka_bootstrap, *, keys: int, per_key: int = 1) -> tuple[str, str]:
    """The order topic deleted, with rows of its own keys ("order-<n>") pending; returns
    (catalog topic, order topic)."""
    catalog, orders = kafka_topics["catalog-events"], kafka_topics["order-events"]
    kafka_topics_delete(kafka_bootstrap, [orders])
    outbox_rows_bulk(topic=orders, keys=keys, per_key=per_key)
    OutboxEvent.objects.filter(topic=orders).update(key=Concat(Value("order-"), F("key")))
    return catalog, orders


@pytest.mark.fault
def test_a_row_its_relay_died_holding_is_not_held_back_by_a_missing_topic(kafka_topics, kafka_bootstrap):
    # given rows of a missing topic, due, older than a catalog row its last relay died holding
    catalog, orders = _missing_orders_topic(kafka_topics, kafka_bootstrap, keys=5)
    (abandoned,) = outbox_rows_bulk(topic=catalog, keys=1, per_key=1)
    OutboxEvent.objects.filter(seq=abandoned.seq).update(
        claim_token=uuid.uuid4(), claim_expires_at=timezone.now() - timedelta(seconds=5)
    )
    # when drains run while the missing topic's rows keep coming due
    results = []
    for _ in range(3):
        OutboxEvent.objects.filter(topic=orders).update(available_at=timezone.now())
        results.append(relay_drain(time_budget_s=10).as_dict())
    # then the abandoned row went out, alone as such a row goes (before: every drain handed it
    # back because the missing topic's rows had failed in the batch before it)
    assert OutboxEvent.objects.get(seq=abandoned.seq).status == "published", results


@pytest.mark.fault
def test_a_producer_that_knew_the_topic_before_it_went_does_not_lift_the_hold(kafka_topics, kafka_bootstrap, settings):
    # given a second producer (the relay loop's full drain has one) that read the order topic's
    # metadata, then the topic deleted and held back by a drain with the default producer
    catalog, orders = kafka_topics["catalog-events"], kafka_topics["order-events"]
    with producer_own("full-drain"):
        producer_get().partitions_for(orders)
    kafka_topics_delete(kafka_bootstrap, [orders])
    outbox_rows_bulk(topic=orders, keys=3, per_key=1)
    OutboxEvent.objects.filter(topic=orders).update(key=Concat(Value("order-"), F("key")))
    relay_drain(time_budget_s=10)
    assert missing_topics.topics() == {orders}
    # when, past the hold's first second, the other producer drains the order rows and new
    # catalog rows
    time.sleep(1.2)
    OutboxEvent.objects.filter(topic=orders).update(available_at=timezone.now())
    outbox_rows_bulk(topic=catalog, keys=3, per_key=1)
    try:
        with producer_own("full-drain"):
            result = relay_drain(time_budget_s=10)
    finally:
        with producer_own("full-drain"):
            producer_close()
    # then the hold stays (its metadata predates the hold: before, it read "back", sent the
    # order rows and waited for their acks until the batch's deadline, releasing the catalog
    # rows unsent), and the catalog rows went out
    assert missing_topics.topics() == {orders}
    assert result.published == 3, result.as_dict()
    assert result.released == 0, result.as_dict()


@pytest.mark.fault
def test_a_missing_topic_counts_no_attempt_so_a_relay_dying_on_its_rows_kills_none(
    kafka_topics, kafka_bootstrap, settings
):
    # given a missing topic's rows, drained again and again as their backoff runs out
    _, orders = _missing_orders_topic(kafka_topics, kafka_bootstrap, keys=1, per_key=2)
    for _ in range(settings.OUTBOX_MAX_ATTEMPTS + 2):
        OutboxEvent.objects.filter(topic=orders).update(available_at=timezone.now())
        relay_drain(time_budget_s=5)
    head = OutboxEvent.objects.filter(topic=orders).order_by("seq").first()
    assert head is not None
    # then its attempts were not counted (confluent-kafka's first refusal is a failed delivery)
    assert head.attempts <= 1, (head.attempts, head.last_error)
    # and a relay that dies holding it once does not make it dead at the next claim
    OutboxEvent.objects.filter(seq=head.seq).update(
        claim_token=uuid.uuid4(), claim_expires_at=timezone.now() - timedelta(seconds=1), available_at=timezone.now()
    )
    relay_drain(time_budget_s=5)
    head.refresh_from_db()
    assert head.status == "pending", (head.status, head.attempts, head.last_error)


def _fatal_error_forced(producer: object) -> None:
    """Put the relay's producer in the fatal state its client reports (neither has a public API
    to cause one)."""
    if isinstance(producer, KafkaProducer):
        # kafka-python 3: the transaction manager holds it; every later batch fails with it and
        # `send()` itself does not raise.
        manager = producer._transaction_manager  # type: ignore[attr-defined]  # no public API for it
        manager.transition_to_fatal_error(ClusterAuthorizationFailedError("forced"))
    else:
        # librdkafka reports it through the error callback, with `fatal()` true.
        import confluent_kafka

        producer._on_error(confluent_kafka.KafkaError(confluent_kafka.KafkaError._FATAL, "forced", fatal=True))  # type: ignore[attr-defined]


def test_a_producer_left_in_a_fatal_state_is_replaced_without_a_restart(kafka_topics):
    # given a relay whose idempotent producer went fatal
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=5, per_key=4)
    broken = producer_get()
    _fatal_error_forced(broken)
    # when the relay drains
    result = relay_drain()
    # then a new producer sent everything, in the same process
    assert result.published == 20, result
    assert producer_get() is not broken
    records = kafka_read_all(topic, expected=20, timeout_s=30)
    assert len({r.headers["event_id"] for r in records}) == 20


@pytest.mark.fault
def test_a_dropped_producer_sends_nothing_of_what_it_still_held(kafka_topics, settings):
    # given the relay's producer holding records it has not sent yet (they linger)
    settings.OUTBOX_PRODUCER_LINGER_MS = 1500
    topic = kafka_topics["catalog-events"]
    producer = producer_get()
    producer.partitions_for(topic)
    futures = [producer.send(topic, key=f"k{i}".encode(), value=b"{}", headers=[]) for i in range(20)]
    # when the relay drops it, as after a failed acknowledgement (send.py's `acknowledged`)
    producer_reset()
    # then what it held fails at once, and none of it reaches the topic, then or later: a row
    # released after the failure is sent again by a later drain, after the failed row of its key
    assert all(future.is_done and future.exception is not None for future in futures)
    time.sleep(3)  # twice the linger: a producer still running would have sent them by now
    assert kafka_read_all(topic) == []
