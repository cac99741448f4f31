"""The event contract between the domain apps and the outbox.

A domain app declares its events as frozen dataclasses that subclass `DomainEvent` (in its own
`events.py`) and hands them to `outbox.recording.outbox_record`. The class says where the event
goes (stream, aggregate); the instance carries the payload. Everything in the payload becomes
JSON: Decimal as a string, datetimes as ISO-8601 UTC, UUIDs as strings.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from django.utils import timezone as django_timezone


def _utc_now() -> datetime:
    return django_timezone.now()


@dataclasses.dataclass(frozen=True, kw_only=True)
class DomainEvent:
    stream: ClassVar[str]  # logical topic: "order-events" or "catalog-events"
    aggregate_type: ClassVar[str]  # "order", "product"
    aggregate_field: ClassVar[str]  # the payload field that holds the aggregate id (the key)
    event_type: ClassVar[str]  # defaults to the class name
    event_version: ClassVar[int] = 1

    event_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    occurred_at: datetime = dataclasses.field(default_factory=_utc_now)
    # The aggregate's sequence number, incremented under its row lock in the transaction that
    # records the event: the order of one aggregate's events without trusting any clock. It
    # travels as the `aggregate_version` header, not in the payload. None for events whose
    # order does not matter (they commute).
    aggregate_version: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.aggregate_field))

    def payload(self) -> dict[str, Any]:
        """The record's value: every field but the envelope's own (event id and aggregate version
        travel as headers)."""
        return {
            name: to_json_compatible(getattr(self, name))
            for name in _payload_fields(type(self))  # type: ignore[arg-type]  # a class hashes (type.__hash__), not by its own __hash__
        }


_ENVELOPE_ONLY_FIELDS = frozenset({"event_id", "aggregate_version"})


@functools.cache
def _payload_fields(event_class: type[DomainEvent]) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(event_class) if field.name not in _ENVELOPE_ONLY_FIELDS)


def iso_utc(value: datetime) -> str:
    """ISO-8601 in UTC with a `Z`, as events carry time (`2026-01-02T03:04:05.123456Z`)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime in an event; use timezone-aware UTC")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_PLAIN_JSON_TYPES = (str, int, float, bool, type(None))


def to_json_compatible(value: Any) -> Any:
    if type(value) in _PLAIN_JSON_TYPES:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json_compatible(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): to_json_compatible(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_compatible(item) for item in value]
    return value
