"""The event contract as the back office reads it (docs/EVENTS.md): headers, types, versions and
payload fields. A record that does not satisfy it is refused with a reason and dead-lettered.

Every value is also bounded to what the back office's columns hold (ids to the domain's bigint
keys, integers to `integer`, amounts to `numeric(14,2)`, texts to their column and without NUL),
so a record the contract accepts is one the database stores: a value past a column's range
must become a dead letter here, never an error that blocks its partition."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any


class ContractViolation(ValueError):
    """The record cannot be handled: the message says which part and why."""


# The columns' bounds (backoffice/models.py). Module constants read at each call, so a test can
# loosen one and show that the consumer's second line of defence (backoffice/isolation.py) holds.
ID_MAX = 2**63 - 1  # ids are the domain's bigint primary keys (or UUIDs)
ID_MAX_LENGTH = 64  # the `varchar(64)` id columns
INTEGER_MIN, INTEGER_MAX = -(2**31), 2**31 - 1  # `integer` columns: stock, versions, counters
SEQUENCE_MAX = 2**63 - 1  # `bigint`: the aggregate_version header
DECIMAL_MAX_DIGITS, DECIMAL_PLACES = 14, 2  # `numeric(14,2)`: every amount
HEADER_TEXT_MAX = 100  # event_type, aggregate_type columns


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
    # The aggregate's sequence number (header `aggregate_version`): the order of one aggregate's
    # events without trusting any clock. None only for types outside VERSIONED_EVENT_TYPES.
    aggregate_version: int | None = None


def _id(value: Any) -> str:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > ID_MAX_LENGTH:
            raise ContractViolation(f"id of {len(value)} digits, the column holds {ID_MAX_LENGTH}")
        if len(value) > 4000 or int(value) > ID_MAX:
            raise ContractViolation(f"id {_short(value)} is past the largest key ({ID_MAX})")
        return value
    if isinstance(value, str) and _is_uuid(value):
        return value
    raise ContractViolation(f"expected an id (string of digits or UUID), got {_short(value)}")


def _is_uuid(value: str) -> bool:
    # The canonical 36-character form only: the braces, URN and hex-only spellings that
    # uuid.UUID also accepts would make two ids of one aggregate.
    if len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _optional_id(value: Any) -> str | None:
    return None if value is None else _id(value)


def _decimal(value: Any) -> Decimal:
    if not isinstance(value, str) or len(value) > 100:
        raise ContractViolation(f"expected a decimal string, got {_short(value)}")
    try:
        parsed = Decimal(value)
    except InvalidOperation as exc:
        raise ContractViolation(f"expected a decimal string, got {_short(value)}") from exc
    if not parsed.is_finite():
        raise ContractViolation(f"expected a finite decimal, got {_short(value)}")
    places = Decimal(1).scaleb(-DECIMAL_PLACES)
    limit = Decimal(10) ** (DECIMAL_MAX_DIGITS - DECIMAL_PLACES)
    if abs(parsed) >= limit:
        raise ContractViolation(f"decimal {_short(value)} does not fit numeric({DECIMAL_MAX_DIGITS},"
                                f"{DECIMAL_PLACES}) (at most {DECIMAL_MAX_DIGITS - DECIMAL_PLACES} "
                                "digits before the point)")
    rounded = parsed.quantize(places)
    if rounded != parsed:
        raise ContractViolation(f"decimal {_short(value)} has more than {DECIMAL_PLACES} decimal places")
    return rounded


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractViolation(f"expected an integer, got {_short(value)}")
    if not INTEGER_MIN <= value <= INTEGER_MAX:
        raise ContractViolation(f"integer {_short(value)} is out of the column's range "
                                f"[{INTEGER_MIN}, {INTEGER_MAX}]")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ContractViolation(f"expected true or false, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ContractViolation(f"expected a string, got {_short(value)}")
    return value


def _bounded_text(max_length: int) -> Callable[[Any], str]:
    """A text stored in a column of max_length characters."""
    def parse(value: Any) -> str:
        text = _text(value)
        if len(text) > max_length:
            raise ContractViolation(f"text of {len(text)} characters, the column holds {max_length}")
        return text
    return parse


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _time(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ContractViolation(f"expected an ISO-8601 time, got {_short(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ContractViolation(f"expected an ISO-8601 time, got {_short(value)}") from exc
    if parsed.tzinfo is None:
        raise ContractViolation(f"time without a timezone: {_short(value)}")
    try:
        # Stored in UTC: a time near year 1 or 9999 with an offset would leave the range there.
        return parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError) as exc:
        raise ContractViolation(f"time out of range in UTC: {_short(value)}") from exc


def _sequence(value: str) -> int:
    """The aggregate_version header: the aggregate's sequence number, a non-negative bigint."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > SEQUENCE_MAX:
        raise ContractViolation(f"header 'aggregate_version' is not an integer in [0, {SEQUENCE_MAX}]: "
                                f"{_short(value)}")
    return int(value)


def _storable(data: Any) -> None:
    """The JSON can be stored as it came (the event log's jsonb): no NUL, no lone surrogate in
    any string or key, no NaN or infinity."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _storable_text(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ContractViolation(f"payload holds a non-finite number ({item!r})")
        elif isinstance(item, dict):
            for key, nested in item.items():
                _storable_text(key)
                stack.append(nested)
        elif isinstance(item, list):
            stack.extend(item)


def _storable_text(text: str) -> None:
    if "\x00" in text:
        raise ContractViolation(f"text holds a NUL character: {_short(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ContractViolation(f"text is not valid Unicode ({exc.reason}): {_short(text)}") from None


def _lines(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ContractViolation(f"expected a non-empty list of lines, got {value!r}")
    lines = []
    for line in value:
        if not isinstance(line, dict):
            raise ContractViolation(f"expected a line object, got {line!r}")
        lines.append(_fields(line, {"product_id": _id, "quantity": _int, "unit_price": _decimal}))
    if len(lines) > 10_000:
        raise ContractViolation(f"{len(lines)} lines, more than an order holds")
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


_ORDER_SNAPSHOT = {"order_id": _id, "order_number": _bounded_text(64), "user_id": _id,
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
    ("PaymentRefundRequired", 1): ("order_id", {"payment_id": _id, "order_id": _id, "user_id": _id,
                                                "amount": _decimal, "card_type": _bounded_text(20),
                                                "reason": _bounded_text(200), "occurred_at": _time}),
}

# Types whose projection keeps "the latest state" of their aggregate (the order ledger): they
# must carry the `aggregate_version` header, and a record without it is dead-lettered. Other
# types commute (counters) or carry their own version (StockChanged.version); for them the
# header is read when present and may be absent.
VERSIONED_EVENT_TYPES = frozenset({"OrderCreated", "OrderConfirmed", "OrderCancelled",
                                   "PaymentRefundRequired"})

REQUIRED_HEADERS = ("event_id", "event_type", "event_version", "aggregate_type", "aggregate_id",
                    "occurred_at")


def event_parse(*, topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, headers: list[tuple[str, bytes]]) -> IncomingEvent:
    """The record as an event of the contract, or ContractViolation naming what is wrong."""
    found: dict[str, str] = {}
    for name, raw in headers or []:
        if raw is None:
            continue  # a header without a value (Kafka Connect's form of a null column) is absent
        try:
            found[name] = raw.decode() if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError as exc:
            raise ContractViolation(f"header {name!r} is not UTF-8") from exc
    for name in REQUIRED_HEADERS:
        if not found.get(name):
            raise ContractViolation(f"header {name!r} is missing")
    for name in ("event_type", "aggregate_type", "aggregate_id", "traceparent"):
        if "\x00" in found.get(name, ""):
            raise ContractViolation(f"header {name!r} holds a NUL character")
    try:
        event_id = uuid.UUID(found["event_id"])
    except ValueError as exc:
        raise ContractViolation(f"header 'event_id' is not a UUID: {_short(found['event_id'])}") from exc
    event_version_text = found["event_version"]
    if not (event_version_text.isascii() and event_version_text.isdigit()) or len(event_version_text) > 9:
        raise ContractViolation(f"header 'event_version' is not an integer: {_short(event_version_text)}")
    version = int(event_version_text)
    occurred_at = _time(found["occurred_at"])
    spec = PAYLOADS.get((found["event_type"], version))
    if spec is None:
        raise ContractViolation(f"unknown event type or version: {_short(found['event_type'])} v{version}")
    if len(found["aggregate_type"]) > HEADER_TEXT_MAX:
        raise ContractViolation(f"header 'aggregate_type' is longer than {HEADER_TEXT_MAX} characters")
    aggregate_version = None
    if found.get("aggregate_version"):
        aggregate_version = _sequence(found["aggregate_version"])
    elif found["event_type"] in VERSIONED_EVENT_TYPES:
        raise ContractViolation(f"header 'aggregate_version' is missing (required for {found['event_type']})")
    aggregate_field, fields = spec
    if value is None:
        raise ContractViolation("record has no value")
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ContractViolation(f"value is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ContractViolation("value is not a JSON object")
    payload = _fields(data, fields)
    _storable(data)
    if payload[aggregate_field] != found["aggregate_id"]:
        raise ContractViolation(
            f"header aggregate_id {_short(found['aggregate_id'])} differs from payload {aggregate_field}")
    if key is not None and key.decode(errors="replace") != found["aggregate_id"]:
        raise ContractViolation(f"record key {_short(key)} differs from aggregate_id "
                                f"{_short(found['aggregate_id'])}")
    return IncomingEvent(event_id=event_id, event_type=found["event_type"], event_version=version,
                         aggregate_type=found["aggregate_type"], aggregate_id=found["aggregate_id"],
                         occurred_at=occurred_at, traceparent=found.get("traceparent", ""),
                         payload=payload, raw_payload=data, topic=topic, partition=partition,
                         offset=offset, aggregate_version=aggregate_version)
