"""One order's trace through the real pipeline: the API request, the outbox's recording, the
relay's send to the real broker and the back office's apply, read back from the SDK's in-memory
exporter as one trace (the request's), with the relations the messaging conventions ask for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping

import pytest
from django.conf import settings
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AnyValue

from backoffice.consumer import EventConsumer
from commerce.observability import telemetry
from outbox.kafka import producer_reset
from outbox.models import OutboxEvent
from outbox.relay import relay_drain
from tests.factories import product_make, token_for, user_make

pytestmark = [pytest.mark.integration, pytest.mark.relay_clients, pytest.mark.django_db(transaction=True)]

CALLER_TRACE_ID = "3" * 32
CALLER_SPAN_ID = "4" * 16


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    producer_reset()
    exporter = InMemorySpanExporter()
    telemetry.telemetry_configure(exporter=exporter, batch=False, set_global=False)
    yield exporter
    telemetry.telemetry_reset()
    producer_reset()


def _ids(span: ReadableSpan | Link) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def _attributes(span: ReadableSpan) -> Mapping[str, AnyValue]:
    return span.attributes or {}


def _parent_span_id(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def _for_event(spans: list[ReadableSpan], prefix: str, event_id: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name.startswith(prefix) and _attributes(s).get("messaging.message.id") == event_id]
    return span


def test_an_order_placed_through_the_api_is_one_trace_from_request_to_projection(api_client, kafka_topics, spans):
    # given: an order placed through the API by a caller that sends its own trace context
    user = user_make()
    product = product_make(price="12.50", stock=5)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    response = api_client.post(
        "/api/orders/",
        {"lines": [{"product_id": product.id, "quantity": 2}]},
        format="json",
        HTTP_TRACEPARENT=f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01",
    )
    assert response.status_code == 201, response.content
    row = OutboxEvent.objects.get(aggregateid=str(response.json()["id"]), type="OrderCreated")
    event_id = str(row.event_id)

    # when: the relay sends it to the broker and the back office consumes it
    drained = relay_drain()
    consumer = EventConsumer(
        topics=list(settings.KAFKA_TOPICS.values()), group_id=f"trace-{uuid.uuid4().hex[:6]}", batch_size=50
    )
    try:
        consumer.run(until_idle_s=3.0)
    finally:
        consumer.close()

    # then: the four spans of this event are in the caller's trace
    assert drained.published >= 1
    finished = list(spans.get_finished_spans())
    (http,) = [s for s in finished if s.kind == SpanKind.SERVER]
    create = _for_event(finished, "create ", event_id)
    send = _for_event(finished, "send ", event_id)
    process = _for_event(finished, "process ", event_id)
    assert http.context.trace_id == int(CALLER_TRACE_ID, 16)
    assert _parent_span_id(http) == int(CALLER_SPAN_ID, 16)
    # and the recording is the request's child, the apply continues the recording's context
    assert create.kind == SpanKind.PRODUCER
    assert _parent_span_id(create) == http.context.span_id
    assert process.kind == SpanKind.CONSUMER
    assert process.context.trace_id == http.context.trace_id
    assert _parent_span_id(process) == create.context.span_id
    # and the send ran later, in the relay's own context: linked to the creation, not its child
    assert send.kind == SpanKind.PRODUCER
    assert send.parent is None
    assert [_ids(link) for link in send.links] == [_ids(create)]
    # and each names the event and its topic; the send and the apply agree on where it landed
    for span in (create, send, process):
        assert _attributes(span)["messaging.message.id"] == event_id
        assert _attributes(span)["messaging.destination.name"] == row.topic
    assert (
        _attributes(send)["messaging.destination.partition.id"]
        == (_attributes(process)["messaging.destination.partition.id"])
    )
    assert _attributes(process)["messaging.kafka.offset"] == OutboxEvent.objects.get(pk=row.pk).kafka_offset
