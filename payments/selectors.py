"""Reads of payments, for the API and for the orders' reaction to a payment."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, Q, QuerySet

from orders.models import Order
from payments.models import Payment


def payment_get(*, payment_id: int, user: User | None = None) -> Payment:
    """A payment; with `user`, only that user's (someone else's raises Payment.DoesNotExist)."""
    payments = Payment.objects.all() if user is None else Payment.objects.filter(user=user)
    return payments.get(id=payment_id)


def payment_finished_for_pending_orders() -> QuerySet[Payment]:
    """Finished payments whose order still awaits payment: a reaction was lost. A failed one
    whose order has a retry open or captured is not: the retry's outcome decides."""
    retried = Payment.objects.filter(order_id=OuterRef("order_id"), status__in=Payment.OPEN_OR_CAPTURED)
    return Payment.objects.filter(
        status__in=[Payment.Status.COMPLETED, Payment.Status.FAILED], order__status=Order.Status.PENDING_PAYMENT
    ).exclude(Q(status=Payment.Status.FAILED) & Exists(retried))


def payment_refunds_due() -> QuerySet[Payment]:
    return Payment.objects.filter(status=Payment.Status.REFUND_DUE).select_related("order", "user")
