"""One order's trace with the SDK's in-memory exporter: the HTTP span, the outbox's "create"
span, the relay's "send" span and the back office's "process" span, with the right relations.

These run without a broker: the test calls the relay's send and the consumer's process helpers
itself with what the relay and the consumer have (the row, the parsed record). The same trace
through the real relay, broker and consumer is test_order_trace_kafka.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from backoffice.contract import event_parse
from commerce.observability import telemetry
from commerce.tracing import trace_id_of, traceparent_get
from outbox.models import OutboxEvent
from tests.factories import product_make, token_for, user_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.telemetry_configure(exporter=exporter, batch=False, set_global=False)
    yield exporter
    telemetry.telemetry_reset()


def _place_order(api_client) -> tuple[dict, str]:
    user = user_make()
    product = product_make(price="12.50", stock=5)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    response = api_client.post(
        "/api/orders/",
        {"lines": [{"product_id": product.id, "quantity": 2}]},
        format="json",
        HTTP_TRACEPARENT="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )
    assert response.status_code == 201, response.content
    return response.json(), response["traceparent"]


def _record_of(row: OutboxEvent, *, partition: int, offset: int):
    """The record as the back office parses it: the relay's headers (row columns + row headers)."""
    headers = [
        ("event_id", str(row.event_id)),
        ("event_type", row.type),
        ("event_version", str(row.event_version)),
        ("aggregate_type", row.aggregatetype),
        ("aggregate_id", row.aggregateid),
        ("occurred_at", row.occurred_at.isoformat()),
        *([("aggregate_version", row.aggregate_version)] if row.aggregate_version is not None else []),
        *row.headers.items(),
    ]
    import json

    return event_parse(
        topic=row.topic,
        partition=partition,
        offset=offset,
        key=row.key.encode(),
        value=json.dumps(row.payload).encode(),
        headers=[(name, str(value).encode()) for name, value in headers],
    )


def _ids(span) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def test_the_http_span_is_the_requests_context_and_each_row_stores_its_create_span(api_client, spans):
    # when: an order is placed through the API
    order, answered = _place_order(api_client)

    # then: the HTTP span continues the caller's trace and is what the response names
    (http,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert http.context.trace_id == int("1" * 32, 16)
    assert http.parent.span_id == int("2" * 16, 16)
    assert answered == f"00-{http.context.trace_id:032x}-{http.context.span_id:016x}-01"
    rows = list(OutboxEvent.objects.filter(aggregateid=str(order["id"]), aggregatetype="order"))
    assert rows
    # and each row carries the context of its own "create" span, a child of the HTTP span
    creates = {
        s.attributes["messaging.message.id"]: s for s in spans.get_finished_spans() if s.name.startswith("create ")
    }
    for row in rows:
        create = creates[str(row.event_id)]
        assert create.parent.span_id == http.context.span_id
        assert row.headers["traceparent"] == (f"00-{create.context.trace_id:032x}-{create.context.span_id:016x}-01")


def test_one_order_reads_as_one_trace_from_the_request_to_the_projection(api_client, spans):
    # given: an order placed through the API, its events recorded inside "create" spans
    order, answered = _place_order(api_client)
    (http,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    creates = {
        s.attributes["messaging.message.id"]: s for s in spans.get_finished_spans() if s.name.startswith("create ")
    }
    row = OutboxEvent.objects.get(aggregateid=str(order["id"]), type="OrderCreated")
    create = creates[str(row.event_id)]

    # when: the relay sends the row (later, in its own context) and the back office applies it
    send = telemetry.relay_send_span_start(
        topic=row.topic,
        event_id=str(row.event_id),
        event_type=row.type,
        key=row.key,
        traceparent=row.headers["traceparent"],
    )
    telemetry.relay_send_span_end(send, partition=1, offset=41)
    with telemetry.consumer_process_span(_record_of(row, partition=1, offset=41), group="backoffice") as process_span:
        inside = traceparent_get()
    (send_done,) = [s for s in spans.get_finished_spans() if s.name.startswith("send ")]
    (process,) = [s for s in spans.get_finished_spans() if s.name.startswith("process ")]

    # then: request -> create -> process are parent and child, in the caller's trace
    assert create.kind == SpanKind.PRODUCER
    assert create.parent.span_id == http.context.span_id
    assert row.headers["traceparent"] == (f"00-{create.context.trace_id:032x}-{create.context.span_id:016x}-01")
    assert process.kind == SpanKind.CONSUMER
    assert process.context.trace_id == http.context.trace_id == trace_id_of_int(answered)
    assert process.parent.span_id == create.context.span_id
    assert [_ids(link) for link in process.links] == [_ids(create)]
    # and the send is linked to the creation context, not its child (it ran later)
    assert send_done.kind == SpanKind.PRODUCER
    assert send_done.parent is None
    assert [_ids(link) for link in send_done.links] == [_ids(create)]
    # and each span names the event and the topic
    for span in (create, send_done, process):
        assert span.attributes["messaging.message.id"] == str(row.event_id)
        assert span.attributes["messaging.destination.name"] == row.topic
        assert span.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.kafka.offset"] == 41
    assert send_done.attributes["messaging.destination.partition.id"] == "1"
    # and what runs inside the apply (logs, further events) is in the process span's context
    assert trace_id_of(inside) == f"{process.context.trace_id:032x}"
    assert process_span.get_span_context().span_id == process.context.span_id


def trace_id_of_int(traceparent: str) -> int:
    trace_id = trace_id_of(traceparent)
    assert trace_id is not None, f"not a traceparent: {traceparent!r}"
    return int(trace_id, 16)


def test_a_failed_send_and_a_failed_batch_are_error_spans(spans):
    send = telemetry.relay_send_span_start(topic="t", event_id="e-1", event_type="T", key="k", traceparent=None)
    telemetry.relay_send_span_end(send, error=TimeoutError("no ack"), dead=False)
    (done,) = spans.get_finished_spans()
    assert done.status.status_code == StatusCode.ERROR
    assert done.attributes["error.type"] == "TimeoutError"
    assert done.links == ()


def test_with_tracing_off_the_helpers_do_nothing_and_traceparents_are_made_as_before():
    assert not telemetry.telemetry_enabled()
    with telemetry.outbox_record_span(topic="t", event_id="e", event_type="T", key="k"):
        made = traceparent_get()
    assert trace_id_of(made) is not None
    span = telemetry.relay_send_span_start(topic="t", event_id="e", event_type="T", key="k", traceparent=made)
    assert not span.is_recording()
    telemetry.relay_send_span_end(span, partition=0, offset=0)
