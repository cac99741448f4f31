"""W3C trace context for the request that causes an event.

The middleware takes the caller's `traceparent` header (or starts a new trace) and keeps it in a
context variable, so that the outbox can stamp it on every event the request records and the
logs can carry the trace id. Celery tasks and consumers set it from the event they handle.

When OpenTelemetry is on (commerce.observability.telemetry, `OTEL_TRACES_EXPORTER`), its current
span is the source of truth: the middleware answers with the HTTP server span's traceparent, and
`traceparent_get()` returns the current span's (the outbox's "create" span while an event is
recorded), so that what the outbox stores is a real span of the trace. Off, the ids are made here.
"""

from __future__ import annotations

import contextvars
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.http import HttpRequest, HttpResponse

from commerce.observability.telemetry import current_span_traceparent, telemetry_enabled

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_traceparent", default=None)


def traceparent_new() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def traceparent_child(parent: str | None) -> str:
    """A new span id in the caller's trace, or a new trace if the parent is absent or malformed."""
    match = _TRACEPARENT.match(parent or "")
    if not match:
        return traceparent_new()
    return f"00-{match.group(1)}-{secrets.token_hex(8)}-{match.group(3)}"


def trace_id_of(traceparent: str | None) -> str | None:
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else None


def traceparent_get() -> str:
    """The current traceparent; starts a trace when none is active (a shell, a beat task)."""
    if telemetry_enabled():
        span_traceparent = current_span_traceparent()
        if span_traceparent is not None:
            return span_traceparent
    value = current_traceparent.get()
    if value is None:
        value = traceparent_new()
        current_traceparent.set(value)
    return value


@contextmanager
def trace_context(traceparent: str | None) -> Iterator[None]:
    token = current_traceparent.set(traceparent)
    try:
        yield
    finally:
        current_traceparent.reset(token)


class TraceparentMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # With OpenTelemetry on, its Django middleware (first in the chain) has opened the HTTP
        # span from the caller's header: that span is the request's context.
        traceparent = (current_span_traceparent() if telemetry_enabled() else None) or traceparent_child(
            request.headers.get("traceparent")
        )
        with trace_context(traceparent):
            response = self.get_response(request)
        response["traceparent"] = traceparent
        return response
