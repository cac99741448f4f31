"""Orders' reaction to payment events: after commit, a Celery task with retries (orders.tasks),
so a failure here never rolls back the payment; `orders.follow_lost_payments` repairs what a
crash lost. Connected in OrdersConfig.ready."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from payments.events import PaymentEvent


def follow_payment_on_commit(sender: Any, *, event: PaymentEvent, **kwargs: Any) -> None:
    from orders.tasks import order_follow_payment

    payment_id = int(event.payment_id)
    transaction.on_commit(lambda: order_follow_payment.delay(payment_id))
