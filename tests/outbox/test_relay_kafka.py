"""The relay against the real broker: envelope, crash window, a real worker, an independent reader."""

from __future__ import annotations

import json
import subprocess
import time
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import transaction

from catalog.services import product_create, product_like, product_restock
from outbox import kick
from outbox.kafka import producer_reset
from outbox.models import OutboxEvent
from outbox.relay import relay_drain
from tests.factories import user_make
from tests.support.kafka import kafka_read_all

pytestmark = [pytest.mark.integration, pytest.mark.relay_clients, pytest.mark.django_db(transaction=True)]

ENVELOPE_HEADERS = {
    "event_id",
    "event_type",
    "event_version",
    "aggregate_type",
    "aggregate_id",
    "aggregate_version",
    "occurred_at",
    "traceparent",
}


@pytest.fixture(autouse=True)
def _fresh_producer():
    producer_reset()
    yield
    producer_reset()


def test_drain_publishes_every_row_with_key_and_envelope_and_marks_it(kafka_topics):
    # given
    user = user_make()
    product = product_create(name="Lamp", price=Decimal("19.90"), stock=3)
    product_like(user=user, product_id=product.id)
    # when
    result = relay_drain()
    # then
    assert result.published == 2
    records = kafka_read_all(kafka_topics["catalog-events"], expected=2)
    rows = {str(r.event_id): r for r in OutboxEvent.objects.all()}
    assert len(records) == 2
    for record in records:
        assert set(record.headers) == ENVELOPE_HEADERS
        row = rows[record.headers["event_id"].decode()]
        assert record.key == str(product.id).encode()
        assert json.loads(record.value) == row.payload
        assert record.headers["event_type"].decode() == row.type
        assert record.headers["event_version"] == b"1"
        assert record.headers["aggregate_id"] == str(product.id).encode()
        assert record.headers["aggregate_version"] == str(row.aggregate_version).encode()
        assert (row.status, row.kafka_partition, row.kafka_offset) == ("published", record.partition, record.offset)
    stock = next(r for r in records if r.headers["event_type"] == b"StockChanged")
    assert json.loads(stock.value)["quantity"] == 3


def test_committed_events_survive_failing_on_commit_callbacks(kafka_topics, settings, monkeypatch):
    # given every on-commit kick fails and no worker runs
    settings.OUTBOX_KICK_ENABLED = True
    settings.OUTBOX_WAKEUP = "celery"  # the Celery kick, not the NOTIFY of the relay loop

    def kick_that_dies() -> None:
        raise RuntimeError("process died right after the commit")

    monkeypatch.setattr(kick, "_kick", kick_that_dies)
    # when services commit (the failing hook surfaces after the commit)
    with pytest.raises(RuntimeError):
        product_create(name="Chair", price=Decimal("5.00"), stock=1)
    with pytest.raises(RuntimeError):
        product_restock(product_id=int(OutboxEvent.objects.get().aggregateid), quantity=2)
    # then the next drain publishes them anyway
    assert relay_drain().published == 2
    records = kafka_read_all(kafka_topics["catalog-events"], expected=2)
    assert [json.loads(r.value)["version"] for r in records] == [1, 2]


def test_a_rolled_back_service_call_reaches_no_topic(kafka_topics):
    with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012 - the rolled-back block is what is tested
        product_create(name="Ghost", price=Decimal("1.00"), stock=1)
        raise RuntimeError("rolled back after the signal")
    assert relay_drain().published == 0
    assert OutboxEvent.objects.count() == 0
    assert kafka_read_all(kafka_topics["catalog-events"], timeout_s=3) == []


def test_the_on_commit_kick_is_executed_by_a_real_worker(kafka_topics, celery_worker_process, settings):
    # given a real worker subprocess and the kick on
    settings.OUTBOX_KICK_ENABLED = True
    settings.OUTBOX_WAKEUP = "celery"  # the Celery kick, not the NOTIFY of the relay loop
    # when a service commits
    product = product_create(name="Kicked", price=Decimal("2.00"), stock=4)
    # then the worker drains it: the record arrives and the row is marked, with no drain here
    records = kafka_read_all(kafka_topics["catalog-events"], expected=1, timeout_s=30)
    assert [r.key for r in records] == [str(product.id).encode()]
    deadline = time.monotonic() + 15
    while OutboxEvent.objects.get().status != "published" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert OutboxEvent.objects.get().status == "published"
    assert "outbox.relay_drain" in celery_worker_process.log_tail(200)


def test_an_independent_reader_sees_the_key_and_every_envelope_header(kafka_topics):
    product = product_create(name="Read by kcat", price=Decimal("1.00"), stock=1)
    relay_drain()
    output = subprocess.run(
        [
            "kcat",
            "-b",
            settings.KAFKA_BOOTSTRAP_SERVERS[0],
            "-C",
            "-t",
            kafka_topics["catalog-events"],
            "-o",
            "beginning",
            "-c",
            "1",
            "-e",
            "-q",
            "-f",
            "key=%k\nheaders=%h\nvalue=%s\n",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f"key={product.id}\n" in output
    headers_line = next(line for line in output.splitlines() if line.startswith("headers="))
    assert {item.split("=", 1)[0] for item in headers_line[len("headers=") :].split(",")} == ENVELOPE_HEADERS
    row = OutboxEvent.objects.get()
    assert f"event_id={row.event_id}" in headers_line
    assert f"aggregate_version={row.aggregate_version}" in headers_line
    assert json.loads(output.split("value=", 1)[1]) == row.payload


def test_a_key_goes_to_the_partition_kafka_pythons_partitioner_gives_it_whichever_the_client(kafka_topics):
    from kafka.partitioner.default import murmur2

    from tests.outbox.events_for_tests import outbox_rows_bulk

    # given rows of 60 keys (a key's partition must not change with the client: its order would)
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=60, per_key=2)
    # when the relay publishes them
    assert relay_drain().published == 120
    # then each key is on murmur2(key) mod 3, the partition kafka-python's producer picks
    for row in OutboxEvent.objects.all():
        assert row.kafka_partition == (murmur2(row.key.encode()) & 0x7FFFFFFF) % 3, row.key
