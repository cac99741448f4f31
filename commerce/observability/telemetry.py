"""OpenTelemetry: the SDK from settings, and the messaging spans of the outbox.

One order's trace follows the messaging semantic conventions (docs/OPERATIONS.md):

    HTTP POST /api/orders/          SERVER    (opentelemetry-instrumentation-django)
    └─ create order-events          PRODUCER  outbox_record_span: its context is the event's
       │                                      creation context, stored in the outbox row's
       │                                      `traceparent` and carried by the Kafka record
       └─ process order-events      CONSUMER  consumer_process_span: child of the creation
                                              context read from the record, and linked to it
    send order-events               PRODUCER  relay_send_span_start: runs later, in the relay's
                                              own context, with a link to the creation context

The relay's send is linked, not a child: it runs after the request has answered, often in one
batch for many requests; the record keeps the creation context, so the consumer's span and
every log line of the event carry the request's trace id.

Off by default (`OTEL_TRACES_EXPORTER=none`): every helper then returns at once and
commerce.tracing keeps generating its own traceparents.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


class _State:
    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None


_state = _State()

# URLs whose requests are not traced: probes and scrapes would drown the orders.
EXCLUDED_URLS = "healthz,readyz,metrics"


def telemetry_enabled() -> bool:
    return _state.tracer is not None


def telemetry_configure(
    *,
    exporter: SpanExporter,
    service_name: str = "commerce",
    batch: bool = True,
    instrument_django: bool = True,
    set_global: bool = True,
) -> TracerProvider:
    """Turn tracing on in this process with `exporter` (tests pass an in-memory one).

    `batch` exports from a background thread (production); without it each span is exported
    when it ends (tests, console). The Django instrumentation adds its middleware to
    settings.MIDDLEWARE: call this before the WSGI handler is built (AppConfig.ready()).
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _state.provider = provider
    _state.tracer = provider.get_tracer("commerce.outbox")
    if set_global:
        trace.set_tracer_provider(provider)
    if instrument_django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=EXCLUDED_URLS)
    return provider


def telemetry_reset() -> None:
    """Tracing off again (tests): spans are flushed, the Django middleware is removed."""
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    instrumentor = DjangoInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if _state.provider is not None:
        _state.provider.shutdown()
    _state.provider = None
    _state.tracer = None


def telemetry_setup_from_settings() -> None:
    """The process's tracing from `OTEL_TRACES_EXPORTER`: `none` (default), `otlp`, `console`.

    `otlp` sends over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (or the _TRACES_ variant), read
    from the environment by the exporter itself, as are OTEL_EXPORTER_OTLP_HEADERS and the
    sampler (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG).
    """
    from django.conf import settings

    kind = settings.OTEL_TRACES_EXPORTER.strip().lower()
    if kind in ("", "none") or telemetry_enabled():
        return
    exporter: SpanExporter
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif kind == "console":
        exporter = ConsoleSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: expected none, otlp or console")
    telemetry_configure(exporter=exporter, service_name=settings.OTEL_SERVICE_NAME, batch=kind == "otlp")


# --- W3C traceparent <-> OpenTelemetry context ------------------------------------------------


def current_span_traceparent() -> str | None:
    """The traceparent of the current OpenTelemetry span, or None when there is none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The remote context a traceparent names, or None when it is absent or malformed."""
    if not traceparent:
        return None
    context = _propagator.extract({"traceparent": traceparent})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def _links_to(context: Context | None) -> list[Link]:
    if context is None:
        return []
    return [Link(trace.get_current_span(context).get_span_context())]


def _messaging_attributes(*, operation: str, topic: str, event_id: str | UUID, event_type: str) -> dict[str, Any]:
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        "messaging.message.id": str(event_id),
        "commerce.event_type": event_type,
    }


def _span_failed(span: Span, error: BaseException | str) -> None:
    from commerce.observability.metrics import error_kind

    span.set_attribute("error.type", error_kind(error))
    if isinstance(error, BaseException):
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


# --- the outbox's spans -----------------------------------------------------------------------


@contextmanager
def outbox_record_span(*, topic: str, event_id: str | UUID, event_type: str, key: str) -> Iterator[None]:
    """Around the recording of one event (in the request's transaction): the "create" span.

    Inside, commerce.tracing.traceparent_get() returns this span's traceparent, which is what
    the outbox row stores and the Kafka record carries: the event's creation context.
    """
    if _state.tracer is None:
        yield
        return
    attributes = _messaging_attributes(operation="create", topic=topic, event_id=event_id, event_type=event_type)
    attributes["messaging.kafka.message.key"] = key
    with _state.tracer.start_as_current_span(f"create {topic}", kind=SpanKind.PRODUCER, attributes=attributes):
        yield


def relay_send_span_start(
    *, topic: str, event_id: str | UUID, event_type: str, key: str, traceparent: str | None
) -> Span:
    """Start the "send" span of one row as the relay hands it to the producer.

    `traceparent` is the row's (headers["traceparent"]): the span links to it. Its parent is
    the relay's current context (none in the sender thread: a root). End it with
    `relay_send_span_end` when the row's outcome is known. A no-op span when tracing is off.
    """
    if _state.tracer is None:
        return INVALID_SPAN
    attributes = _messaging_attributes(operation="send", topic=topic, event_id=event_id, event_type=event_type)
    attributes["messaging.kafka.message.key"] = key
    return _state.tracer.start_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        links=_links_to(context_from_traceparent(traceparent)),
    )


def relay_send_span_end(
    span: Span,
    *,
    partition: int | None = None,
    offset: int | None = None,
    error: BaseException | str | None = None,
    dead: bool = False,
) -> None:
    """The row's outcome: acknowledged at `partition`/`offset`, or `error` (and `dead` or not)."""
    if not span.is_recording():
        return
    if partition is not None:
        span.set_attribute("messaging.destination.partition.id", str(partition))
    if offset is not None:
        span.set_attribute("messaging.kafka.offset", offset)
    if error is not None:
        span.set_attribute("commerce.outbox.dead", dead)
        _span_failed(span, error)
    span.end()


class ConsumedMessage(Protocol):
    """What the consumer's spans read from a parsed record (backoffice IncomingEvent fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def event_id(self) -> str | UUID: ...
    @property
    def event_type(self) -> str: ...
    @property
    def traceparent(self) -> str: ...


def _process_span_start(message: ConsumedMessage, *, group: str) -> tuple[Span, Context | None]:
    assert _state.tracer is not None
    creation = context_from_traceparent(message.traceparent)
    attributes = _messaging_attributes(
        operation="process", topic=message.topic, event_id=message.event_id, event_type=message.event_type
    )
    attributes.update(
        {
            "messaging.destination.partition.id": str(message.partition),
            "messaging.kafka.offset": message.offset,
            "messaging.consumer.group.name": group,
        }
    )
    # Parent and link both: the parent puts the apply in the request's trace, the link is what
    # the conventions require (and what survives a backend that drops remote parents).
    span = _state.tracer.start_span(
        f"process {message.topic}",
        context=creation or Context(),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=_links_to(creation),
    )
    return span, creation


@contextmanager
def consumer_process_span(message: ConsumedMessage, *, group: str) -> Iterator[Span]:
    """The "process" span of one record, current inside the block; an exception marks it."""
    if _state.tracer is None:
        yield INVALID_SPAN
        return
    span, _ = _process_span_start(message, group=group)
    with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield span


@contextmanager
def consumer_batch_spans(messages: Sequence[ConsumedMessage], *, group: str) -> Iterator[list[Span]]:
    """One "process" span per record of a batch applied in one transaction.

    They start on entry and end on exit, so each spans the batch's apply; an exception (the
    batch is retried) ends them all as errors, and the retry opens new ones.
    """
    if _state.tracer is None or not messages:
        yield []
        return
    spans = [_process_span_start(message, group=group)[0] for message in messages]
    try:
        yield spans
    except BaseException as exc:
        for span in spans:
            _span_failed(span, exc)
            span.end()
        raise
    for span in spans:
        span.end()


def consumer_span_dead_lettered(span: Span, *, error: str) -> None:
    """Mark a record's span whose record was dead-lettered in the batch instead of applied."""
    if span.is_recording():
        span.set_attribute("commerce.dead_lettered", True)
        _span_failed(span, error)
