"""Payments' reaction to an order event, inside the order's transaction (connected in ready())."""

from __future__ import annotations

from typing import Any

from orders.events import OrderCancelled
from payments.services import payments_refund_for_cancelled_order


def refund_on_order_cancelled(sender: Any, *, event: OrderCancelled, **kwargs: Any) -> None:
    # In the cancel's transaction: an order is never cancelled while its captured money is
    # silently kept.
    payments_refund_for_cancelled_order(order_id=int(event.order_id))
