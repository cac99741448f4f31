from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from outbox.envelope import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleLine:
    product_id: str
    unit_price: Decimal


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleHappened(DomainEvent):
    stream = "order-events"
    aggregate_type = "order"
    aggregate_field = "order_id"

    order_id: str
    total: Decimal
    lines: tuple[SampleLine, ...]


def test_payload_is_json_compatible_with_decimal_strings_and_utc_time():
    # given
    occurred = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = SampleHappened(
        order_id="42",
        total=Decimal("10.50"),
        occurred_at=occurred,
        lines=(SampleLine(product_id="7", unit_price=Decimal("5.25")),),
    )
    # when
    payload = event.payload()
    # then
    assert payload == {
        "order_id": "42",
        "total": "10.50",
        "lines": [{"product_id": "7", "unit_price": "5.25"}],
        "occurred_at": "2026-01-02T03:04:05Z",
    }
    assert event.event_type == "SampleHappened"
    assert event.aggregate_id == "42"


def test_naive_datetime_is_refused():
    event = SampleHappened(order_id="1", total=Decimal("1"), lines=(), occurred_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the naive value under test
    with pytest.raises(ValueError, match="naive"):
        event.payload()
