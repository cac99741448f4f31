"""The relay reports to its observers: a "send" span per row (linked to the row's creation
context, ended with its partition and offset or its error) and the Prometheus counters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.utils import timezone
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from commerce.observability import telemetry
from outbox.kafka import producer_reset
from outbox.models import OutboxEvent
from outbox.relay import relay_drain
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = [pytest.mark.integration, pytest.mark.relay_clients, pytest.mark.django_db(transaction=True)]

TRACE_ID = "a" * 32  # the traceparent outbox_rows_bulk stores on its rows
PARENT_SPAN_ID = "b" * 16


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    producer_reset()
    exporter = InMemorySpanExporter()
    telemetry.telemetry_configure(exporter=exporter, batch=False, instrument_django=False, set_global=False)
    yield exporter
    telemetry.telemetry_reset()
    producer_reset()


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_sent_row_has_a_send_span_linked_to_its_creation_and_the_counters_move(kafka_topics, spans):
    # given: two rows that go out, and one too large for the broker (a permanent error: dead)
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=2, per_key=1)
    now = timezone.now()
    too_large = OutboxEvent.objects.create(
        event_id=uuid.uuid4(),
        topic=topic,
        key="big",
        type="SequenceRecorded",
        aggregatetype="product",
        aggregateid="big",
        payload={"blob": "x" * 1_200_000},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"},
        occurred_at=now,
        available_at=now,
    )
    published_before = _counter("outbox_events_published_total", topic=topic)
    dead_before = _counter("outbox_events_dead_total", topic=topic, error="MessageSizeTooLargeError")

    # when
    result = relay_drain()

    # then: one PRODUCER span per row handed to the producer, linked (not parented) to the row's
    # creation context, ended with the outcome the write-back recorded
    assert (result.published, result.dead) == (2, 1)
    sent = [span for span in spans.get_finished_spans() if span.name == f"send {topic}"]
    assert len(sent) == 3
    for span in sent:
        assert span.kind == SpanKind.PRODUCER
        assert span.parent is None
        assert [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in span.links] == [
            (TRACE_ID, PARENT_SPAN_ID)
        ]
    by_id = {span.attributes["messaging.message.id"]: span for span in sent}
    for row in OutboxEvent.objects.filter(status="published"):
        span = by_id[str(row.event_id)]
        assert span.attributes["messaging.destination.partition.id"] == str(row.kafka_partition)
        assert span.attributes["messaging.kafka.offset"] == row.kafka_offset
        assert span.status.status_code != StatusCode.ERROR
    failed = by_id[str(too_large.event_id)]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "MessageSizeTooLargeError"
    assert failed.attributes["commerce.outbox.dead"] is True
    # and the Prometheus counters moved by what was written back
    assert _counter("outbox_events_published_total", topic=topic) - published_before == 2
    assert _counter("outbox_events_dead_total", topic=topic, error="MessageSizeTooLargeError") - dead_before == 1
