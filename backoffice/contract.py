"""The event contract as the back office reads it (docs/EVENTS.md): headers, types, versions and
payload fields. A record that does not satisfy it is refused with a reason and dead-lettered.

Every value is also bounded to what the back office's columns hold (ids to the domain's bigint
keys, integers to `integer`, amounts to `numeric(14,2)`, texts to their column and without NUL),
so a record the contract accepts is one the database stores: a value past a column's range
must become a dead letter here, never an error that blocks its partition.

The payload fields below are the one source of the JSON Schemas (backoffice/schemas.py): each
field says its schema (types, bounds, formats), and the schema is what checks a value, here and
when the domain records an event (outbox/schema_check.py); what is left in a field's `convert`
is only what JSON Schema cannot say (an id's numeric bound, a time's range once in UTC) and the
conversion to Python types. The AsyncAPI document (docs/asyncapi.yaml) is generated from them.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

# ContractViolation and the header rules are the contract's: re-exported (`X as X`) for its readers.
from backoffice.records import (
    HEADER_TEXT_MAX as HEADER_TEXT_MAX,
    REQUIRED_HEADERS as REQUIRED_HEADERS,
    SEQUENCE_MAX as SEQUENCE_MAX,
    ContractViolation as ContractViolation,
    headers_read as headers_read,
    sequence_parse as sequence_parse,
    short as short,
    storable as storable,
)

# The columns' bounds (backoffice/models.py). Module constants read at each call (the schemas are
# compiled per value of these bounds), so a test can loosen one and show that the consumer's
# second line of defence (backoffice/isolation.py) holds.
ID_MAX = 2**63 - 1  # ids are the domain's bigint primary keys (or UUIDs)
ID_MAX_LENGTH = 64  # the `varchar(64)` id columns
INTEGER_MIN, INTEGER_MAX = -(2**31), 2**31 - 1  # `integer` columns: stock, versions, counters
DECIMAL_MAX_DIGITS, DECIMAL_PLACES = 14, 2  # `numeric(14,2)`: every amount
LINES_MAX = 10_000  # more lines than an order holds


def bounds() -> tuple[int, ...]:
    """The bounds the schemas are built from, as they are now (a compiled schema's cache key)."""
    return (ID_MAX_LENGTH, INTEGER_MIN, INTEGER_MAX, DECIMAL_MAX_DIGITS, DECIMAL_PLACES, LINES_MAX)


@dataclass(frozen=True)
class IncomingEvent:
    event_id: uuid.UUID
    event_type: str
    event_version: int  # as received (the event log keeps the record as it came)
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    traceparent: str
    payload: dict[str, Any]  # validated, typed (Decimal, datetime), upcast to `payload_version`
    raw_payload: dict[str, Any]  # the JSON as received, for the event log
    topic: str
    partition: int
    offset: int
    # The aggregate's sequence number (header `aggregate_version`): the order of one aggregate's
    # events without trusting any clock. None only for types outside VERSIONED_EVENT_TYPES.
    aggregate_version: int | None = None
    # The version `payload` is in once upcast (UPCASTERS): handlers know only the latest.
    # None when built by hand (a test): then it is event_version.
    payload_version: int | None = None


# --- Fields: a JSON Schema, then what the schema cannot say ---------------------------------------


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Field:
    """One payload field: its JSON Schema (built from the bounds when asked), the conversion of a
    value the schema accepted to its Python type, and an example for the AsyncAPI document.
    `convert` raises ContractViolation for the little JSON Schema cannot say."""

    schema: Callable[[], dict[str, Any]]
    convert: Callable[[Any], Any] = _same
    example: Any = None
    required: bool = True


_UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def _id_schema() -> dict[str, Any]:
    # Digits (a bigint key: its bound 2^63-1 is checked by `_id`) or a canonical UUID: the
    # braces, URN and hex-only spellings would make two ids of one aggregate.
    return {
        "type": "string",
        "maxLength": ID_MAX_LENGTH,
        "pattern": f"^([0-9]+|{_UUID_PATTERN})$",
        "description": f"an id: the decimal digits of a bigint key (at most {ID_MAX}) or a "
        f"canonical UUID; the column holds {ID_MAX_LENGTH} characters",
    }


def _id(value: str) -> str:
    if len(value) >= 19 and value.isdigit() and int(value) > ID_MAX:
        raise ContractViolation(f"id {short(value)} is past the largest key ({ID_MAX})")
    return value


def _decimal_schema() -> dict[str, Any]:
    whole = DECIMAL_MAX_DIGITS - DECIMAL_PLACES
    return {
        "type": "string",
        "pattern": f"^-?[0-9]{{1,{whole}}}(\\.[0-9]{{1,{DECIMAL_PLACES}}})?$",
        "description": f"an amount as a decimal string that fits the column's numeric("
        f"{DECIMAL_MAX_DIGITS},{DECIMAL_PLACES}): at most {whole} digits before "
        f"the point, {DECIMAL_PLACES} after",
    }


_CENT = Decimal(1).scaleb(-2)


_QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)


def _decimal(value: str) -> Decimal:
    return Decimal(value).quantize(_QUANTUM)


def _int_schema(minimum: int | None = None) -> Callable[[], dict[str, Any]]:
    def schema() -> dict[str, Any]:
        low = INTEGER_MIN if minimum is None else minimum
        return {
            "type": "integer",
            "minimum": low,
            "maximum": INTEGER_MAX,
            "description": f"an integer within the column's range [{low}, {INTEGER_MAX}]",
        }

    return schema


def _int(value: Any) -> int:
    if not isinstance(value, int):  # JSON Schema's integer takes 1.0: the column's type does not
        raise ContractViolation(f"expected an integer, got {short(value)}")
    return value


def _text_schema(max_length: int | None = None) -> Callable[[], dict[str, Any]]:
    def schema() -> dict[str, Any]:
        if max_length is None:
            return {"type": "string"}
        return {
            "type": "string",
            "maxLength": max_length,
            "description": f"a text, the column holds {max_length} characters",
        }

    return schema


def _time_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
        "description": "ISO-8601 time with its offset (the producer writes UTC with Z), within "
        "years 1-9999 once in UTC",
    }


# The last time parsed, and its text: a record's payload usually repeats its header's
# `occurred_at`, parsed just before. (One tuple, replaced whole: safe across threads.)
_last_time: list[tuple[str, datetime]] = [("", datetime.min.replace(tzinfo=UTC))]


def _time(value: str) -> datetime:
    last_text, last_parsed = _last_time[0]
    if value == last_text:
        return last_parsed
    parsed = _time_parse(value)
    _last_time[0] = (value, parsed)
    return parsed


def _time_parse(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ContractViolation(f"expected an ISO-8601 time, got {short(value)}") from exc
    if parsed.tzinfo is None:
        raise ContractViolation(f"time without a timezone: {short(value)}")
    try:
        # Stored in UTC: a time near year 1 or 9999 with an offset would leave the range there.
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ContractViolation(f"time out of range in UTC: {short(value)}") from exc


def _nullable(field: Field, example: Any = None) -> Field:
    def schema() -> dict[str, Any]:
        inner = field.schema()
        return {**inner, "type": [inner["type"], "null"]}

    def convert(value: Any) -> Any:
        return None if value is None else field.convert(value)

    return Field(schema, convert, example)


def object_schema(fields: dict[str, Field]) -> dict[str, Any]:
    """An object of these fields; fields it does not know are allowed (a compatible addition)."""
    return {
        "type": "object",
        "required": [name for name, f in fields.items() if f.required],
        "properties": {name: f.schema() for name, f in fields.items()},
        "additionalProperties": True,
    }


def fields_convert(data: dict[str, Any], fields: dict[str, Field], path: str) -> dict[str, Any]:
    """The fields of a valid object, converted (an optional field absent is None)."""
    # dict(zip(map)) gathers the fields in C: the comprehension's bytecode per field showed in
    # the consumer's profile (docs/BACKOFFICE.md, "Where a batch's time goes").
    converted = dict(zip(fields, map(data.get, fields), strict=True))
    for name, convert in _conversions(fields):  # the fields whose value the schema left as it is skip this
        if name in data:
            try:
                converted[name] = convert(data[name])
            except ContractViolation as exc:
                inner = str(exc)  # an item's error starts with its index: `lines[0].quantity: ...`
                raise ContractViolation(f"{path}.{name}{'' if inner.startswith('[') else ': '}{inner}") from None
    return converted


_CONVERSIONS: dict[int, list[tuple[str, Callable[[Any], Any]]]] = {}


def _conversions(fields: dict[str, Field]) -> list[tuple[str, Callable[[Any], Any]]]:
    found = _CONVERSIONS.get(id(fields))
    if found is None:  # the field dicts live as long as the module: their id is stable
        found = _CONVERSIONS[id(fields)] = [(name, f.convert) for name, f in fields.items() if f.convert is not _same]
    return found


def _lines(*, v2: bool) -> Field:
    line = {
        "product_id": ID,
        "quantity": Field(_int_schema(minimum=1), _int, 2),
        "unit_price": Field(_decimal_schema, _decimal, "5.00"),
    }
    if v2:
        line["subtotal"] = Field(_decimal_schema, _decimal, "10.00")

    def schema() -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "maxItems": LINES_MAX, "items": object_schema(line)}

    def convert(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        converted = []
        for n, item in enumerate(value):
            try:
                converted.append(fields_convert(item, line, ""))
            except ContractViolation as exc:  # `.quantity: ...` -> `[0].quantity: ...`
                raise ContractViolation(f"[{n}]{exc}") from None
            if v2:
                # What the line sold for, by definition (orders/events.py): the sales ledger adds
                # it at confirmation and takes quantity x unit_price off at cancellation, so one
                # that disagreed would leave the product's sales amount wrong for good.
                found = converted[-1]
                try:
                    expected = (found["quantity"] * found["unit_price"]).quantize(_CENT)
                except ArithmeticError:  # past the decimal context's precision: no amount to sell
                    raise ContractViolation(f"[{n}].subtotal: quantity x unit_price is out of range") from None
                if found["subtotal"] != expected:
                    raise ContractViolation(
                        f"[{n}].subtotal: {found['subtotal']} is not quantity x unit_price ({expected})"
                    )
        return converted

    example = {name: spec.example for name, spec in line.items()}
    return Field(schema, convert, [{**example, "product_id": "3"}])


ID = Field(_id_schema, _id, "42")
DECIMAL = Field(_decimal_schema, _decimal, "10.00")
INT = Field(_int_schema(), _int, 7)
BOOL = Field(lambda: {"type": "boolean"}, _same, True)
TEXT = Field(_text_schema(), _same, "text")
TIME = Field(_time_schema, _time, "2026-11-24T03:04:05.123456Z")


def _text(max_length: int | None = None, example: str = "text") -> Field:
    return Field(_text_schema(max_length), _same, example)


_ORDER_SNAPSHOT = {
    "order_id": ID,
    "order_number": _text(64, "ORD-20261124-000042"),
    "user_id": ID,
    "original_total": DECIMAL,
    "discount": Field(_decimal_schema, _decimal, "0.00"),
    "final_total": DECIMAL,
    "lines": _lines(v2=False),
    "occurred_at": TIME,
}
_PAYMENT = {
    "payment_id": ID,
    "transaction_key": _text(example="tx-9f8e7d"),
    "order_id": ID,
    "user_id": ID,
    "amount": DECIMAL,
    "card_type": _text(example="VISA"),
    "occurred_at": TIME,
}

# (event_type, version) -> (aggregate field, payload fields)
PAYLOADS: dict[tuple[str, int], tuple[str, dict[str, Field]]] = {
    ("LikeChanged", 1): ("product_id", {"product_id": ID, "user_id": ID, "liked": BOOL, "occurred_at": TIME}),
    ("ProductViewed", 1): ("product_id", {"product_id": ID, "user_id": _nullable(ID, "7"), "occurred_at": TIME}),
    ("StockChanged", 1): (
        "product_id",
        {
            "product_id": ID,
            "quantity": INT,
            "version": INT,
            "delta": Field(_int_schema(), _int, -2),
            "reason": _text(example="reserve"),
            "order_id": _nullable(ID),
            "occurred_at": TIME,
        },
    ),
    ("OrderCreated", 1): ("order_id", {**_ORDER_SNAPSHOT, "coupon_code": _nullable(TEXT)}),
    ("OrderConfirmed", 1): ("order_id", _ORDER_SNAPSHOT),
    # v2: each line carries its subtotal, the order its currency (docs/EVENTS.md, "Evolution").
    ("OrderConfirmed", 2): (
        "order_id",
        {
            **_ORDER_SNAPSHOT,
            "lines": _lines(v2=True),
            "currency": Field(
                lambda: {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code of every amount"},
                _same,
                "EUR",
            ),
        },
    ),
    ("OrderCancelled", 1): ("order_id", {**_ORDER_SNAPSHOT, "reason": _text(example="timeout"), "was_confirmed": BOOL}),
    ("PaymentCompleted", 1): ("order_id", _PAYMENT),
    ("PaymentFailed", 1): ("order_id", {**_PAYMENT, "reason": _text(example="card declined")}),
    ("PaymentRefundRequired", 1): (
        "order_id",
        {
            "payment_id": ID,
            "order_id": ID,
            "user_id": ID,
            "amount": DECIMAL,
            "card_type": _text(20, "VISA"),
            "reason": _text(200, "order_cancelled"),
            "occurred_at": TIME,
        },
    ),
}


# --- Evolution: older versions read as the latest, in one place -----------------------------------


def _order_confirmed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    # A v1 line's subtotal is what v2 would carry (quantity x unit_price, as the order charged);
    # its amounts were in the shop's one currency, the one v2 names (settings.SHOP_CURRENCY).
    lines = [{**line, "subtotal": (line["unit_price"] * line["quantity"]).quantize(_CENT)} for line in payload["lines"]]
    return {**payload, "lines": lines, "currency": settings.SHOP_CURRENCY}


# (event_type, version) -> the typed payload one version up. A version with an upcaster is still
# read (records of it stay on the topics) but no longer produced; handlers see the latest only.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("OrderConfirmed", 1): _order_confirmed_v1_to_v2,
}


def payload_upcast(event_type: str, version: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The typed payload in the latest version of its type, and that version."""
    while (upcast := UPCASTERS.get((event_type, version))) is not None:
        payload, version = upcast(payload), version + 1
    return version, payload


# Types whose projection keeps "the latest state" of their aggregate (the order ledger): they
# must carry the `aggregate_version` header, and a record without it is dead-lettered. Other
# types commute (counters) or carry their own version (StockChanged.version); for them the
# header is read when present and may be absent.
VERSIONED_EVENT_TYPES = frozenset({"OrderCreated", "OrderConfirmed", "OrderCancelled", "PaymentRefundRequired"})


@functools.cache
def _payload_validate() -> Callable[[str, int, Any], None]:
    from backoffice.schemas import payload_validate  # the schemas are built from this module

    return payload_validate


def payload_check(event_type: str, version: int, data: Any, *, text_storable: bool = False) -> dict[str, Any]:
    """The payload of this type and version, validated against its JSON Schema and typed; or
    ContractViolation with the schema's error path (`payload.lines[0].quantity: ...`).

    `text_storable`: the caller knows every string of `data` is storable already (decoded by
    `json_object` from ASCII without a `\\u` escape), so only the numbers are left to check,
    and `json_object` checked those while decoding."""
    spec = PAYLOADS.get((event_type, version))
    if spec is None:
        raise ContractViolation(f"unknown event type or version: {short(event_type)} v{version}")
    _payload_validate()(event_type, version, data)
    payload = fields_convert(data, spec[1], "payload")
    if not text_storable:
        storable(data)
    return payload


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 reads as infinity
        raise ContractViolation(f"payload holds a non-finite number ({number!r})")
    return number


def _no_constant(text: str) -> Any:
    raise ContractViolation(f"payload holds a non-finite number ({float(text)!r})")


# json.loads, refusing what the event log's jsonb cannot hold as it reads the numbers: NaN,
# Infinity, and a float past the double's range (both hooks run only on such literals or on a
# float, none of which a payload of the contract holds; its amounts are strings).
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def json_object(value: bytes) -> tuple[dict[str, Any], bool]:
    """The record's value as a JSON object, and whether its strings are known storable without
    looking at them: ASCII JSON without a `\\u` escape holds no NUL (a raw control character is
    refused by the decoder) and no lone surrogate. Any other value is decoded as json.loads
    does (UTF-8/16/32, surrogates passed through), and `storable` walks its strings."""
    try:
        if isinstance(value, str):  # a hand-built record; off the wire a value is bytes
            text, plain = value, False
        elif value.isascii():
            text, plain = value.decode("ascii"), b"\\u" not in value
        else:
            text, plain = value.decode(json.detect_encoding(value), "surrogatepass"), False
        data = _DECODER.decode(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, ContractViolation):
            raise
        raise ContractViolation(f"value is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ContractViolation("value is not a JSON object")
    return data, plain


def event_parse(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, object]],
) -> IncomingEvent:
    """The record as an event of the contract, or ContractViolation naming what is wrong."""
    found = headers_read(headers)
    try:
        event_id = uuid.UUID(found["event_id"])
    except ValueError as exc:
        raise ContractViolation(f"header 'event_id' is not a UUID: {short(found['event_id'])}") from exc
    event_version_text = found["event_version"]
    if not (event_version_text.isascii() and event_version_text.isdigit()) or len(event_version_text) > 9:
        raise ContractViolation(f"header 'event_version' is not an integer: {short(event_version_text)}")
    version = int(event_version_text)
    occurred_at = _time(found["occurred_at"])
    event_type = found["event_type"]
    spec = PAYLOADS.get((event_type, version))
    if spec is None:
        raise ContractViolation(f"unknown event type or version: {short(event_type)} v{version}")
    aggregate_version = None
    if found.get("aggregate_version"):
        aggregate_version = sequence_parse(found["aggregate_version"])
    elif event_type in VERSIONED_EVENT_TYPES:
        raise ContractViolation(f"header 'aggregate_version' is missing (required for {event_type})")
    if value is None:
        raise ContractViolation("record has no value")
    data, text_storable = json_object(value)
    payload = payload_check(event_type, version, data, text_storable=text_storable)
    aggregate_field = spec[0]
    if payload[aggregate_field] != found["aggregate_id"]:
        raise ContractViolation(
            f"header aggregate_id {short(found['aggregate_id'])} differs from payload {aggregate_field}"
        )
    if key is not None and key.decode(errors="replace") != found["aggregate_id"]:
        raise ContractViolation(f"record key {short(key)} differs from aggregate_id {short(found['aggregate_id'])}")
    payload_version, payload = payload_upcast(event_type, version, payload)
    # Every field given, into the instance's dict: the frozen dataclass's __init__ sets each
    # through object.__setattr__, a tenth of the parse (tests/backoffice/test_event_schema.py
    # checks the result is the event the constructor makes).
    event = object.__new__(IncomingEvent)
    event.__dict__.update(
        event_id=event_id,
        event_type=event_type,
        event_version=version,
        aggregate_type=found["aggregate_type"],
        aggregate_id=found["aggregate_id"],
        occurred_at=occurred_at,
        traceparent=found.get("traceparent", ""),
        payload=payload,
        raw_payload=data,
        topic=topic,
        partition=partition,
        offset=offset,
        aggregate_version=aggregate_version,
        payload_version=payload_version,
    )
    return event
