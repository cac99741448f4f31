"""The back office's event handlers, registered per event type in one place (`HANDLERS`).

A handler is a plain function of (event, effects): it adds what the event changes to the batch's
`Effects`, which `backoffice.projections.effects_apply` writes in bulk (one update per product)
in the batch's transaction. Handlers run only for events the inbox has not seen in this consumer
group, so counters move once per event id; stock and the ledger are order-insensitive too
(the highest `StockChanged.version`; the highest `aggregate_version` of the order, never a
clock), which makes every handler idempotent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from backoffice.contract import IncomingEvent


@dataclass
class MetricsDelta:
    likes: int = 0
    views: int = 0
    sales_quantity: int = 0
    sales_amount: Decimal = Decimal("0.00")


@dataclass
class Effects:
    metrics: dict[str, MetricsDelta] = field(default_factory=lambda: defaultdict(MetricsDelta))
    stock: dict[str, tuple[int, int]] = field(default_factory=dict)  # product -> (version, quantity)
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # order -> latest row
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)  # order -> refund due

    def stock_seen(self, product_id: str, *, version: int, quantity: int) -> None:
        current = self.stock.get(product_id)
        if current is None or version > current[0]:
            self.stock[product_id] = (version, quantity)

    def ledger_seen(self, order_id: str, row: dict[str, Any]) -> None:
        current = self.ledger.get(order_id)
        if current is None or row["aggregate_version"] >= current["aggregate_version"]:
            self.ledger[order_id] = row

    def refund_seen(self, order_id: str, *, amount: Decimal, reason: str, user_id: str, event: IncomingEvent) -> None:
        # Refunds add up (each event once, by the inbox): their order does not matter.
        current = self.refunds.get(order_id)
        if current is None:
            self.refunds[order_id] = {
                "amount": amount,
                "reason": reason,
                "user_id": user_id,
                "event_id": event.event_id,
                "event_time": event.occurred_at,
            }
        else:
            current["amount"] += amount
            current["reason"] = reason


def handle_like_changed(event: IncomingEvent, effects: Effects) -> None:
    effects.metrics[event.payload["product_id"]].likes += 1 if event.payload["liked"] else -1


def handle_product_viewed(event: IncomingEvent, effects: Effects) -> None:
    effects.metrics[event.payload["product_id"]].views += 1


def handle_stock_changed(event: IncomingEvent, effects: Effects) -> None:
    payload = event.payload
    effects.metrics[payload["product_id"]]  # the product gets a metrics row even with no counter
    effects.stock_seen(payload["product_id"], version=payload["version"], quantity=payload["quantity"])


def _sales(event: IncomingEvent, effects: Effects, sign: int) -> None:
    for line in event.payload["lines"]:
        delta = effects.metrics[line["product_id"]]
        delta.sales_quantity += sign * line["quantity"]
        delta.sales_amount += sign * line["quantity"] * line["unit_price"]


def _sales_of_subtotals(event: IncomingEvent, effects: Effects) -> None:
    # OrderConfirmed v2 (and v1 upcast to it) carries each line's subtotal: the amount sold.
    for line in event.payload["lines"]:
        delta = effects.metrics[line["product_id"]]
        delta.sales_quantity += line["quantity"]
        delta.sales_amount += line["subtotal"]


def _ledger_row(event: IncomingEvent, status: str) -> dict[str, Any]:
    payload = event.payload
    return {
        "order_number": payload["order_number"],
        "user_id": payload["user_id"],
        "status": status,
        "original_total": payload["original_total"],
        "discount": payload["discount"],
        "final_total": payload["final_total"],
        "event_type": event.event_type,
        "event_id": event.event_id,
        "event_time": event.occurred_at,
        "aggregate_version": event.aggregate_version or 0,
    }


def handle_order_created(event: IncomingEvent, effects: Effects) -> None:
    effects.ledger_seen(event.payload["order_id"], _ledger_row(event, "PENDING_PAYMENT"))


def handle_order_confirmed(event: IncomingEvent, effects: Effects) -> None:
    _sales_of_subtotals(event, effects)
    effects.ledger_seen(event.payload["order_id"], _ledger_row(event, "CONFIRMED"))


def handle_order_cancelled(event: IncomingEvent, effects: Effects) -> None:
    if event.payload["was_confirmed"]:
        _sales(event, effects, -1)
    effects.ledger_seen(event.payload["order_id"], _ledger_row(event, "CANCELLED"))


def handle_payment_refund_required(event: IncomingEvent, effects: Effects) -> None:
    payload = event.payload
    effects.refund_seen(
        payload["order_id"], amount=payload["amount"], reason=payload["reason"], user_id=payload["user_id"], event=event
    )


def handle_nothing(event: IncomingEvent, effects: Effects) -> None:
    """Known events with no projection effect beyond the event log (kept for the audit)."""


Handler = Callable[[IncomingEvent, Effects], None]

# Keyed by the payload's version once upcast (backoffice.contract.UPCASTERS): a version that is
# upcast has no handler of its own; OrderConfirmed v1 records are handled as v2.
HANDLERS: dict[tuple[str, int], Handler] = {
    ("LikeChanged", 1): handle_like_changed,
    ("ProductViewed", 1): handle_product_viewed,
    ("StockChanged", 1): handle_stock_changed,
    ("OrderCreated", 1): handle_order_created,
    ("OrderConfirmed", 2): handle_order_confirmed,
    ("OrderCancelled", 1): handle_order_cancelled,
    ("PaymentCompleted", 1): handle_nothing,
    ("PaymentFailed", 1): handle_nothing,
    ("PaymentRefundRequired", 1): handle_payment_refund_required,
}


def event_handle(event: IncomingEvent, effects: Effects) -> None:
    HANDLERS[(event.event_type, event.payload_version or event.event_version)](event, effects)
