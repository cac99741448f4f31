"""Events of orders, published on order-events keyed by order id (docs/EVENTS.md)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from outbox.envelope import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderLinePayload:
    product_id: str
    quantity: int
    unit_price: Decimal


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderLineTotalPayload(OrderLinePayload):
    subtotal: Decimal  # quantity x unit_price: what the line sold for


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderEvent(DomainEvent):
    stream = "order-events"
    aggregate_type = "order"
    aggregate_field = "order_id"

    order_id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderSnapshotEvent(OrderEvent):
    order_number: str
    user_id: str
    original_total: Decimal
    discount: Decimal
    final_total: Decimal
    lines: tuple[OrderLinePayload, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderCreated(OrderSnapshotEvent):
    coupon_code: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderConfirmed(OrderSnapshotEvent):
    """Version 2: each line carries its subtotal, the order its currency (ISO 4217). Version 1
    records (neither) stay on the topic; the back office reads them through its upcaster
    (docs/EVENTS.md, "Evolving an event")."""

    event_version = 2

    lines: tuple[OrderLineTotalPayload, ...]
    currency: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderCancelled(OrderSnapshotEvent):
    reason: str
    was_confirmed: bool
