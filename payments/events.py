"""Events of payments, published on order-events keyed by the order id (docs/EVENTS.md)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from outbox.envelope import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentEvent(DomainEvent):
    stream = "order-events"
    aggregate_type = "order"
    aggregate_field = "order_id"

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
