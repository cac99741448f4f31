"""Events of payments, published on order-events keyed by the order id (docs/EVENTS.md).

Each is recorded under the order's row lock with the order's next `aggregate_version`.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from outbox.envelope import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderKeyedEvent(DomainEvent):
    stream = "order-events"
    aggregate_type = "order"
    aggregate_field = "order_id"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentEvent(OrderKeyedEvent):
    payment_id: str
    transaction_key: str
    order_id: str
    user_id: str
    amount: Decimal
    card_type: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentCompleted(PaymentEvent):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentFailed(PaymentEvent):
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentRefundRequired(OrderKeyedEvent):
    """Money was captured for an order that cannot keep it (cancelled, or already paid)."""

    payment_id: str
    order_id: str
    user_id: str
    amount: Decimal
    card_type: str
    reason: str  # order_cancelled | order_already_paid
