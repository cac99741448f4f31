"""Payment use cases: request a charge, and complete or fail it from the gateway's callback.

The order follows the payment after commit (a Celery task with retries), so a failure to
confirm or cancel the order never rolls back the payment; `payment_reconcile` repairs orders
whose reaction was lost.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from commerce.errors import Conflict, DomainValidationError, IllegalTransition
from orders.models import Order
from orders.services import order_cancel, order_confirm
from payments.events import PaymentCompleted, PaymentFailed
from payments.gateway import callback_signature_valid, gateway_get
from payments.models import Payment
from payments.signals import payment_completed, payment_failed

logger = logging.getLogger(__name__)

TRANSACTION_KEY = re.compile(r"txn_[0-9a-f]{24}")


class InvalidSignature(Exception):
    """The callback is not signed by the gateway; nothing may change."""


@dataclass(frozen=True)
class CallbackOutcome:
    payment: Payment
    changed: bool


def _event_fields(payment: Payment) -> dict[str, object]:
    return dict(payment_id=str(payment.id), transaction_key=payment.transaction_key,
                order_id=str(payment.order_id), user_id=str(payment.user_id),
                amount=payment.amount, card_type=payment.card_type)


def _order_follow_on_commit(payment: Payment) -> None:
    from payments.tasks import order_follow_payment

    payment_id = payment.id
    transaction.on_commit(lambda: order_follow_payment.delay(payment_id))


def payment_request(*, user: AbstractBaseUser, order_id: int, card_type: str) -> Payment:
    """Create a PENDING payment for the user's order and ask the gateway after commit.

    Raises Order.DoesNotExist for someone else's order, IllegalTransition (409) when the order
    is not awaiting payment, Conflict (409) when a payment is already pending or completed.
    """
    if card_type not in Payment.CardType.values:
        raise DomainValidationError(f"unknown card type {card_type!r}", field="card_type")
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order_id, user=user)
        if order.status != Order.Status.PENDING_PAYMENT:
            raise IllegalTransition(f"order {order.number} is {order.status}", status=order.status)
        if order.payments.filter(status__in=[Payment.Status.PENDING, Payment.Status.COMPLETED]).exists():
            raise Conflict(f"order {order.number} already has a payment in progress",
                           status=order.status)
        payment = Payment.objects.create(order=order, user=user, amount=order.final_total,
                                         card_type=card_type)
        transaction.on_commit(lambda: gateway_get().payment_request(
            transaction_key=payment.transaction_key))
    return payment


def _payment_finish(*, transaction_key: str, status: str, reason: str = "") -> CallbackOutcome:
    """Move a PENDING payment to `status`; the same final status again changes nothing."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(transaction_key=transaction_key)
        if payment.status == status:
            return CallbackOutcome(payment, changed=False)
        if payment.status != Payment.Status.PENDING:
            raise IllegalTransition(f"payment {transaction_key} is {payment.status}",
                                    status=payment.status)
        # Lock the order too: the payment's events are events of the order's key.
        Order.objects.select_for_update().get(id=payment.order_id)
        payment.status = status
        payment.finished_at = timezone.now()
        if status == Payment.Status.COMPLETED:
            payment.save(update_fields=["status", "finished_at", "updated_at"])
            payment_completed.send(sender=Payment, event=PaymentCompleted(**_event_fields(payment)))
        else:
            payment.failure_reason = (reason or "declined")[:200]
            payment.save(update_fields=["status", "failure_reason", "finished_at", "updated_at"])
            payment_failed.send(sender=Payment, event=PaymentFailed(
                **_event_fields(payment), reason=payment.failure_reason))
        _order_follow_on_commit(payment)
    return CallbackOutcome(payment, changed=True)


def payment_complete(*, transaction_key: str) -> Payment:
    """Mark a PENDING payment COMPLETED. A repeated success callback changes nothing.

    Raises Payment.DoesNotExist, IllegalTransition (409) when the payment had failed.
    """
    return _payment_finish(transaction_key=transaction_key, status=Payment.Status.COMPLETED).payment


def payment_fail(*, transaction_key: str, reason: str) -> Payment:
    """Mark a PENDING payment FAILED. A repeated failure callback changes nothing.

    Raises Payment.DoesNotExist, IllegalTransition (409) when the payment had completed.
    """
    return _payment_finish(transaction_key=transaction_key, status=Payment.Status.FAILED,
                           reason=reason).payment


def payment_callback_handle(*, body: bytes, signature: str | None) -> CallbackOutcome:
    """Verify and apply a gateway callback (the endpoint and the simulated gateway share it).

    Raises InvalidSignature, DomainValidationError (400), Payment.DoesNotExist, IllegalTransition.
    """
    if not callback_signature_valid(body, signature):
        raise InvalidSignature("bad or missing X-Signature")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainValidationError(f"body is not JSON: {exc}", field="non_field_errors") from exc
    if not isinstance(data, dict):
        raise DomainValidationError("body must be a JSON object", field="non_field_errors")
    key = data.get("transaction_key")
    status = data.get("status")
    if not isinstance(key, str) or not TRANSACTION_KEY.fullmatch(key):
        raise DomainValidationError("must be a transaction key (txn_ and 24 hex digits)",
                                    field="transaction_key")
    if status == Payment.Status.COMPLETED:
        return _payment_finish(transaction_key=key, status=Payment.Status.COMPLETED)
    if status == Payment.Status.FAILED:
        reason = data.get("reason")
        return _payment_finish(transaction_key=key, status=Payment.Status.FAILED,
                               reason=reason if isinstance(reason, str) else "")
    raise DomainValidationError("must be COMPLETED or FAILED", field="status")


def order_follow_payment(*, payment_id: int) -> None:
    """Confirm or cancel the order of a finished payment. Safe to run any number of times."""
    payment = Payment.objects.get(id=payment_id)
    order = Order.objects.get(id=payment.order_id)
    if order.status != Order.Status.PENDING_PAYMENT:
        if payment.status == Payment.Status.COMPLETED and order.status == Order.Status.CANCELLED:
            logger.warning("payment completed for a cancelled order: refund needed",
                           extra={"payment_id": payment.id, "order_id": order.id})
        return
    if payment.status == Payment.Status.COMPLETED:
        order_confirm(order_id=order.id)
    elif payment.status == Payment.Status.FAILED:
        try:
            order_cancel(order_id=order.id, reason=f"payment failed: {payment.failure_reason}")
        except IllegalTransition:
            pass  # cancelled meanwhile: nothing left to do


def payment_reconcile(*, now=None) -> dict[str, int]:  # noqa: ANN001 - datetime | None
    """Repair what a lost after-commit reaction left behind; run periodically by beat.

    Orders still awaiting payment whose payment finished follow it; payments the gateway never
    answered within PAYMENT_RECONCILE_AFTER seconds fail with reason "gateway timeout".
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER)
    repaired = 0
    finished = Payment.objects.filter(
        status__in=[Payment.Status.COMPLETED, Payment.Status.FAILED],
        order__status=Order.Status.PENDING_PAYMENT,
    ).values_list("id", flat=True)
    for payment_id in list(finished):
        order_follow_payment(payment_id=payment_id)
        repaired += 1
    timed_out = 0
    stale = Payment.objects.filter(status=Payment.Status.PENDING, created_at__lt=cutoff)
    for key in list(stale.values_list("transaction_key", flat=True)):
        try:
            payment_fail(transaction_key=key, reason="gateway timeout")
            timed_out += 1
        except IllegalTransition:
            pass
    return {"orders_repaired": repaired, "payments_timed_out": timed_out}
