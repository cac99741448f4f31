"""A poison record whose copy Kafka would refuse is still dead-lettered, and its partition moves
on: a record with neither key nor value (the producer refuses to send one), and one whose copy
with the error headers is over the producer's maximum request size. The DeadLetter row keeps
the record as it came; the `.dlq` copy says what it left out (its `dlq_value` header)."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from backoffice.consumer import EventConsumer
from backoffice.models import DeadLetter, InboxEntry, ProductMetrics
from tests.backoffice.stream import Record, like, produce, view
from tests.support.kafka import kafka_read_all

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The producer's default max_request_size, which the forwarder keeps.
MAX_REQUEST_SIZE = 1_048_576


def _consume_or_stall(*, within_s: float = 60.0) -> tuple[EventConsumer, bool]:
    """Run a consumer until it is idle; stop it after `within_s` if it is still retrying (a
    stalled partition). Returns it, and whether it had to be stopped."""
    consumer = EventConsumer(
        topics=list(settings.KAFKA_TOPICS.values()), group_id=f"g-{uuid.uuid4().hex[:6]}", batch_size=200
    )
    stalled = threading.Event()

    def stop_stalled() -> None:
        stalled.set()
        consumer.stop()

    timer = threading.Timer(within_s, stop_stalled)
    timer.start()
    try:
        consumer.run(until_idle_s=3.0)
    finally:
        timer.cancel()
        consumer.close()
    return consumer, stalled.is_set()


def _produce_without_key_or_value(topic: str, *, partition: int) -> None:
    # kafka-python refuses to send such a record; librdkafka (and the Java client) do not.
    from confluent_kafka import Producer

    servers = settings.KAFKA_BOOTSTRAP_SERVERS
    producer = Producer({"bootstrap.servers": servers if isinstance(servers, str) else ",".join(servers)})
    producer.produce(topic, value=None, key=None, partition=partition)
    assert producer.flush(10) == 0


def _dlq_headers(kafka_topics: dict[str, str]) -> dict[str, bytes]:
    (copy,) = kafka_read_all(f"{kafka_topics['catalog-events']}.dlq", expected=1)
    return copy.headers


def _assert_neighbours_applied_once(good: list[Record]) -> None:
    assert {str(e) for e in InboxEntry.objects.values_list("event_id", flat=True)} == {r.event_id for r in good}
    metrics = ProductMetrics.objects.get(product_id="3")
    assert (metrics.like_count, metrics.view_count) == (1, 2)


def test_a_record_with_neither_key_nor_value_is_dead_lettered_and_its_partition_moves_on(kafka_topics):
    # given a record without key, value or headers between good ones on one partition
    good = [like("3", True), view("3"), view("3")]
    produce(good[:1], kafka_topics, partition=0)
    _produce_without_key_or_value(kafka_topics["catalog-events"], partition=0)
    produce(good[1:], kafka_topics, partition=0)
    # when the back office reads them
    consumer, stalled = _consume_or_stall()
    # then it is a dead letter as it came, its copy says its value was null, the rest applied
    assert not stalled, "the partition stalled on the record"
    assert consumer.stats.dead_lettered == 1
    letter = DeadLetter.objects.get()
    assert (letter.offset, letter.key, letter.value) == (1, None, None)
    headers = _dlq_headers(kafka_topics)
    assert headers["dlq_value"] == b"null"
    assert headers["dlq_source_offset"] == b"1"
    _assert_neighbours_applied_once(good)


def test_a_record_whose_copy_is_over_the_request_size_is_dead_lettered_without_its_value(kafka_topics):
    # given a poison record that the broker took, but whose copy with the error headers is
    # larger than the producer's maximum request size
    good = [like("3", True), view("3"), view("3")]
    value = b"x" * (MAX_REQUEST_SIZE - 200)  # not JSON: a contract violation
    large = Record("catalog-events", b"3", value, [("event_id", str(uuid.uuid4()).encode())])
    produce([good[0], large, *good[1:]], kafka_topics, partition=0)
    # when the back office reads them
    consumer, stalled = _consume_or_stall()
    # then the DeadLetter row keeps the whole record, the copy says where the value is
    assert not stalled, "the partition stalled on the record"
    assert consumer.stats.dead_lettered == 1
    letter = DeadLetter.objects.get()
    assert letter.value is not None
    assert bytes(letter.value) == value
    headers = _dlq_headers(kafka_topics)
    assert headers["dlq_value"].startswith(f"omitted: {len(value)} bytes".encode())
    assert headers["dlq_error"]
    _assert_neighbours_applied_once(good)


def test_a_batch_retried_after_a_transient_error_sends_its_poison_copy_once(kafka_topics, monkeypatch):
    # given a poison record and good ones on one partition, the good ones' metrics row locked by
    # another session and a lock_timeout on the consumer's: its first pass forwards the poison
    # record's copy, then fails (transient) and is retried once the lock is gone
    ProductMetrics.objects.create(product_id="3")
    good = [like("3", True), view("3"), view("3")]
    _produce_without_key_or_value(kafka_topics["catalog-events"], partition=0)
    produce(good, kafka_topics, partition=0)
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    holder = psycopg.connect(**params)
    holder.execute("SELECT 1 FROM backoffice_productmetrics WHERE product_id = '3' FOR UPDATE")
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '100ms'")
    back_off = EventConsumer._back_off
    retried: list[str] = []

    def back_off_once_the_lock_is_gone(self, message, exc, **kwargs):
        retried.append(type(exc).__name__)
        holder.rollback()
        back_off(self, message, exc, **kwargs)

    monkeypatch.setattr(EventConsumer, "_back_off", back_off_once_the_lock_is_gone)
    try:
        # when the back office reads them
        consumer, stalled = _consume_or_stall()
    finally:
        holder.close()
    # then the batch was retried, and the poison record has one copy on `.dlq`, one letter
    assert not stalled
    assert retried[:1] == ["LockNotAvailable"], retried
    assert consumer.stats.dead_lettered == 1
    assert DeadLetter.objects.count() == 1
    copies = kafka_read_all(f"{kafka_topics['catalog-events']}.dlq")
    assert len(copies) == 1, [copy.headers for copy in copies]
    _assert_neighbours_applied_once(good)
