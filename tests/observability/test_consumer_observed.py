"""The back office's consumer feeds its Prometheus series and its spans, against the real broker:
records applied, duplicates and dead letters per topic, the batch's apply duration, commit to
projection, the lag of each partition, the poll heartbeat, and a "process" span per record that
continues the producer's context."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from backoffice.consumer import EventConsumer
from commerce.observability import telemetry
from tests.backoffice.stream import Record, like, order_event, produce, view

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.telemetry_configure(exporter=exporter, batch=False, set_global=False, instrument_django=False)
    yield exporter
    telemetry.telemetry_reset()


def _lags(topics: set[str]) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for metric in REGISTRY.collect()
        if metric.name == "backoffice_consumer_lag_records"
        for s in metric.samples
        if s.labels["topic"] in topics
    }


def _consume(group: str) -> dict[tuple[str, str], float]:
    """Run a consumer until idle; returns the lag gauges as they were before it left the group."""
    consumer = EventConsumer(topics=list(settings.KAFKA_TOPICS.values()), group_id=group, batch_size=50)
    try:
        consumer.run(until_idle_s=3.0)
        return _lags(set(settings.KAFKA_TOPICS.values()))
    finally:
        consumer.close()


def test_a_consumer_run_moves_its_series(kafka_topics):
    # given: 3 catalog events (one of them delivered twice), 1 order event, 1 poison record
    catalog, orders = kafka_topics["catalog-events"], kafka_topics["order-events"]
    first = like("1", True)
    poison = Record("catalog-events", b"1", b"{broken json", view("1").headers)
    records = [first, first, view("2"), view("3"), poison, order_event("OrderConfirmed", "10", [("1", 1, "9.99")])]
    before = {
        name: _sample(name, labels)
        for name, labels in [
            ("backoffice_records_applied_total", {"topic": catalog}),
            ("backoffice_records_applied_total", {"topic": orders}),
            ("backoffice_records_duplicate_total", {"topic": catalog}),
            ("backoffice_records_dead_lettered_total", {"topic": catalog, "error": "ContractViolation"}),
            ("backoffice_batch_apply_duration_seconds_count", None),
            ("backoffice_commit_to_projection_seconds_count", {"topic": catalog}),
            ("backoffice_commit_to_projection_seconds_count", {"topic": orders}),
        ]
    }
    polled_before = time.time()
    produce(records, kafka_topics)

    # when
    lags = _consume(f"g-{uuid.uuid4().hex[:6]}")

    # then: the counters moved by what the run did, per topic
    def moved(name: str, labels: dict[str, str] | None = None) -> float:
        return _sample(name, labels) - before[name]

    assert moved("backoffice_records_applied_total", {"topic": catalog}) == 3
    assert moved("backoffice_records_applied_total", {"topic": orders}) == 1
    assert moved("backoffice_records_duplicate_total", {"topic": catalog}) == 1
    assert moved("backoffice_records_dead_lettered_total", {"topic": catalog, "error": "ContractViolation"}) == 1
    assert moved("backoffice_batch_apply_duration_seconds_count") >= 1
    assert moved("backoffice_commit_to_projection_seconds_count", {"topic": catalog}) == 3
    assert moved("backoffice_commit_to_projection_seconds_count", {"topic": orders}) == 1
    assert _sample("backoffice_consumer_last_poll_timestamp_seconds") >= polled_before
    # while it ran, every assigned partition had a lag, 0 once all was consumed; leaving the
    # group revoked them and removed their series (their next owner reports them)
    assert set(lags) == {(topic, str(p)) for topic in (catalog, orders) for p in range(3)}
    assert set(lags.values()) == {0.0}
    assert _lags({catalog, orders}) == {}


def test_each_applied_record_has_a_consumer_span_continuing_the_producer_context(kafka_topics, spans):
    # given
    records = [view("5"), order_event("OrderConfirmed", "11", [("5", 2, "1.00")])]
    produce(records, kafka_topics)
    group = f"g-{uuid.uuid4().hex[:6]}"

    # when
    _consume(group)

    # then: one CONSUMER span per record, a child of the record's traceparent, linked to it
    processed = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    by_event = {s.attributes["messaging.message.id"]: s for s in processed}
    assert set(by_event) == {r.event_id for r in records}
    for record in records:
        _, trace_id, parent_id, _ = dict(record.headers)["traceparent"].decode().split("-")
        span = by_event[record.event_id]
        assert f"{span.context.trace_id:032x}" == trace_id
        assert f"{span.parent.span_id:016x}" == parent_id
        assert [f"{link.context.span_id:016x}" for link in span.links] == [parent_id]
        assert span.attributes["messaging.consumer.group.name"] == group
        assert span.attributes["messaging.destination.name"] == kafka_topics[record.topic_stream]
