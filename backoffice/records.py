"""The parts of the event contract JSON Schema does not say (backoffice/contract.py reads a record
with them): the envelope's headers, and what the event log's jsonb can store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class ContractViolation(ValueError):
    """The record cannot be handled: the message says which part and why."""


SEQUENCE_MAX = 2**63 - 1  # `bigint`: the aggregate_version header
HEADER_TEXT_MAX = 100  # event_type, aggregate_type columns
REQUIRED_HEADERS = ("event_id", "event_type", "event_version", "aggregate_type", "aggregate_id", "occurred_at")


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def storable(data: Any) -> None:
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
        raise ContractViolation(f"text holds a NUL character: {short(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ContractViolation(f"text is not valid Unicode ({exc.reason}): {short(text)}") from None


def sequence_parse(value: str) -> int:
    """The aggregate_version header: the aggregate's sequence number, a non-negative bigint."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > SEQUENCE_MAX:
        raise ContractViolation(f"header 'aggregate_version' is not an integer in [0, {SEQUENCE_MAX}]: {short(value)}")
    return int(value)


def headers_read(headers: Sequence[tuple[str, object]]) -> dict[str, str]:
    # A value off the wire is bytes or None; one of any other type (a hand-built record) is read
    # through str().
    try:
        # The common case in one comprehension: every value bytes, UTF-8 (a header without a
        # value, Kafka Connect's form of a null column, is absent).
        found = {name: raw.decode() for name, raw in headers or () if raw is not None}  # type: ignore[attr-defined]
    except (AttributeError, UnicodeDecodeError):
        found = _headers_read_one_by_one(headers)
    for name in REQUIRED_HEADERS:
        if not found.get(name):
            raise ContractViolation(f"header {name!r} is missing")
    for name in ("event_type", "aggregate_type", "aggregate_id", "traceparent"):
        if "\x00" in found.get(name, ""):
            raise ContractViolation(f"header {name!r} holds a NUL character")
    if len(found["aggregate_type"]) > HEADER_TEXT_MAX:
        raise ContractViolation(f"header 'aggregate_type' is longer than {HEADER_TEXT_MAX} characters")
    return found


def _headers_read_one_by_one(headers: Sequence[tuple[str, object]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, raw in headers or []:
        if raw is None:
            continue
        try:
            found[name] = raw.decode() if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError as exc:
            raise ContractViolation(f"header {name!r} is not UTF-8") from exc
    return found
