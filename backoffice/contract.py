"""The event contract as the back office reads it (docs/EVENTS.md): headers, types, versions and
payload fields. A record that does not satisfy it is refused with a reason and dead-lettered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class ContractViolation(ValueError):
    """The record cannot be handled: the message says which part and why."""


@dataclass(frozen=True)
class IncomingEvent:
    event_id: uuid.UUID
    event_type: str
    event_version: int
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    traceparent: str
    payload: dict[str, Any]  # validated and typed (Decimal, datetime)
    raw_payload: dict[str, Any]  # the JSON as received, for the event log
    topic: str
    partition: int
    offset: int


def _id(value: Any) -> str:
    if isinstance(value, str) and (value.isdigit() or _is_uuid(value)):
        return value
    raise ContractViolation(f"expected an id (string of digits or UUID), got {value!r}")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _optional_id(value: Any) -> str | None:
    return None if value is None else _id(value)


def _decimal(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ContractViolation(f"expected a decimal string, got {value!r}")
    try:
        parsed = Decimal(value)
    except InvalidOperation as exc:
        raise ContractViolation(f"expected a decimal string, got {value!r}") from exc
    if not parsed.is_finite():
        raise ContractViolation(f"expected a finite decimal, got {value!r}")
    return parsed


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractViolation(f"expected an integer, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ContractViolation(f"expected true or false, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ContractViolation(f"expected a string, got {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ContractViolation(f"expected an ISO-8601 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ContractViolation(f"expected an ISO-8601 time, got {value!r}") from exc
    if parsed.tzinfo is None:
        raise ContractViolation(f"time without a timezone: {value!r}")
    return parsed


def _lines(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ContractViolation(f"expected a non-empty list of lines, got {value!r}")
    lines = []
    for line in value:
        if not isinstance(line, dict):
            raise ContractViolation(f"expected a line object, got {line!r}")
        lines.append(_fields(line, {"product_id": _id, "quantity": _int, "unit_price": _decimal}))
    return lines


def _fields(data: dict[str, Any], spec: dict[str, Callable[[Any], Any]]) -> dict[str, Any]:
    parsed = {}
    for name, parse in spec.items():
        if name not in data:
            raise ContractViolation(f"payload field {name!r} is missing")
        try:
            parsed[name] = parse(data[name])
        except ContractViolation as exc:
            raise ContractViolation(f"payload field {name!r}: {exc}") from None
    return parsed


_ORDER_SNAPSHOT = {"order_id": _id, "order_number": _text, "user_id": _id,
                   "original_total": _decimal, "discount": _decimal, "final_total": _decimal,
                   "lines": _lines, "occurred_at": _time}
_PAYMENT = {"payment_id": _id, "transaction_key": _text, "order_id": _id, "user_id": _id,
            "amount": _decimal, "card_type": _text, "occurred_at": _time}

# (event_type, version) -> (aggregate field, payload fields)
PAYLOADS: dict[tuple[str, int], tuple[str, dict[str, Callable[[Any], Any]]]] = {
    ("LikeChanged", 1): ("product_id", {"product_id": _id, "user_id": _id, "liked": _bool,
                                        "occurred_at": _time}),
    ("ProductViewed", 1): ("product_id", {"product_id": _id, "user_id": _optional_id,
                                          "occurred_at": _time}),
    ("StockChanged", 1): ("product_id", {"product_id": _id, "quantity": _int, "version": _int,
                                         "delta": _int, "reason": _text,
                                         "order_id": _optional_id, "occurred_at": _time}),
    ("OrderCreated", 1): ("order_id", {**_ORDER_SNAPSHOT, "coupon_code": _optional_text}),
    ("OrderConfirmed", 1): ("order_id", _ORDER_SNAPSHOT),
    ("OrderCancelled", 1): ("order_id", {**_ORDER_SNAPSHOT, "reason": _text,
                                         "was_confirmed": _bool}),
    ("PaymentCompleted", 1): ("order_id", _PAYMENT),
    ("PaymentFailed", 1): ("order_id", {**_PAYMENT, "reason": _text}),
}

REQUIRED_HEADERS = ("event_id", "event_type", "event_version", "aggregate_type", "aggregate_id",
                    "occurred_at")


def event_parse(*, topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, headers: list[tuple[str, bytes]]) -> IncomingEvent:
    """The record as an event of the contract, or ContractViolation naming what is wrong."""
    found: dict[str, str] = {}
    for name, raw in headers or []:
        try:
            found[name] = raw.decode() if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError as exc:
            raise ContractViolation(f"header {name!r} is not UTF-8") from exc
    for name in REQUIRED_HEADERS:
        if not found.get(name):
            raise ContractViolation(f"header {name!r} is missing")
    try:
        event_id = uuid.UUID(found["event_id"])
    except ValueError as exc:
        raise ContractViolation(f"header 'event_id' is not a UUID: {found['event_id']!r}") from exc
    try:
        version = int(found["event_version"])
    except ValueError as exc:
        raise ContractViolation(f"header 'event_version' is not an integer: {found['event_version']!r}") from exc
    occurred_at = _time(found["occurred_at"])
    spec = PAYLOADS.get((found["event_type"], version))
    if spec is None:
        raise ContractViolation(f"unknown event type or version: {found['event_type']} v{version}")
    aggregate_field, fields = spec
    if value is None:
        raise ContractViolation("record has no value")
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractViolation(f"value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ContractViolation("value is not a JSON object")
    payload = _fields(data, fields)
    if payload[aggregate_field] != found["aggregate_id"]:
        raise ContractViolation(
            f"header aggregate_id {found['aggregate_id']!r} differs from payload {aggregate_field}")
    if key is not None and key.decode(errors="replace") != found["aggregate_id"]:
        raise ContractViolation(f"record key {key!r} differs from aggregate_id {found['aggregate_id']!r}")
    return IncomingEvent(event_id=event_id, event_type=found["event_type"], event_version=version,
                         aggregate_type=found["aggregate_type"], aggregate_id=found["aggregate_id"],
                         occurred_at=occurred_at, traceparent=found.get("traceparent", ""),
                         payload=payload, raw_payload=data, topic=topic, partition=partition, offset=offset)
