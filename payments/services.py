"""Payment use cases: request a charge; settle it from the gateway's signed callback or from
the reconciliation, which asks the gateway before it decides anything.

Money the gateway captured is always recorded: a capture for an order that can no longer be paid
becomes REFUND_DUE with a PaymentRefundRequired event, never a refusal. Every event of a payment
is an event of its order: recorded under the order's row lock with the order's next version.
Orders follow a payment after commit (orders.receivers), so a failure there never rolls back
the payment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypedDict

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from commerce.errors import Conflict, DomainValidationError, IllegalTransition
from orders.models import Order
from payments.events import PaymentCompleted, PaymentFailed, PaymentRefundRequired
from payments.gateway import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ChargeState,
    GatewayUnavailable,
    callback_signature_valid,
    gateway_get,
)
from payments.models import CallbackReceipt, Payment
from payments.signals import payment_completed, payment_failed, payment_refund_required

logger = logging.getLogger(__name__)

TRANSACTION_KEY = re.compile(r"txn_[0-9a-f]{24}")
EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a str holds no surrogate pairs: each is alone


class InvalidSignature(Exception):
    """The callback is not signed by the gateway, or not now: nothing may change (401)."""


class ReplayedCallback(Conflict):
    """A callback with an event id already applied: refused, nothing changes (409)."""

    code = "replayed"


@dataclass(frozen=True)
class CallbackOutcome:
    payment: Payment
    changed: bool


class _PaymentEventFields(TypedDict):
    payment_id: str
    transaction_key: str
    order_id: str
    user_id: str
    amount: Decimal
    card_type: str


def _event_fields(payment: Payment) -> _PaymentEventFields:
    return {
        "payment_id": str(payment.id),
        "transaction_key": payment.transaction_key,
        "order_id": str(payment.order_id),
        "user_id": str(payment.user_id),
        "amount": payment.amount,
        "card_type": payment.card_type,
    }


def payment_request(*, user: User, order_id: int, card_type: str) -> Payment:
    """Create a PENDING payment for the user's order and ask the gateway after commit.

    Raises Order.DoesNotExist for someone else's order, IllegalTransition (409) when the order
    is not awaiting payment, Conflict (409) when a payment is open or captured.
    """
    if card_type not in Payment.CardType.values:
        raise DomainValidationError(f"unknown card type {card_type!r}", field="card_type")
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order_id, user=user)
        if order.status != Order.Status.PENDING_PAYMENT:
            raise IllegalTransition(f"order {order.number} is {order.status}", status=order.status)
        if order.payments.filter(status__in=Payment.OPEN_OR_CAPTURED).exists():
            raise Conflict(f"order {order.number} already has a payment in progress", status=order.status)
        payment = Payment.objects.create(order=order, user=user, amount=order.final_total, card_type=card_type)
        transaction.on_commit(lambda: gateway_get().payment_request(transaction_key=payment.transaction_key))
    return payment


def _order_version_bump(order: Order) -> int:
    version = order.version_bump()
    order.save(update_fields=["version"])
    return version


def _refund_required(*, payment: Payment, order: Order, reason: str) -> None:
    """Mark captured money refund-due and say so; the caller holds both rows' locks."""
    payment.status = Payment.Status.REFUND_DUE
    payment.refund_reason = reason
    payment.finished_at = payment.finished_at or timezone.now()
    payment.save(update_fields=["status", "refund_reason", "finished_at", "updated_at"])
    payment_refund_required.send(
        sender=Payment,
        event=PaymentRefundRequired(
            payment_id=str(payment.id),
            order_id=str(payment.order_id),
            user_id=str(payment.user_id),
            amount=payment.amount,
            card_type=payment.card_type,
            reason=reason,
            aggregate_version=_order_version_bump(order),
        ),
    )


def _capture_record(*, payment: Payment, order: Order) -> None:
    """The gateway captured the money: COMPLETED if the order can still take it, else REFUND_DUE.

    An order awaiting payment that another captured payment already paid (a retry after a
    failure, both captured before the order's reaction to either ran) cannot take a second one.
    """
    already_paid = order.payments.filter(status=Payment.Status.COMPLETED).exclude(pk=payment.pk).exists()
    if order.status == Order.Status.PENDING_PAYMENT and not already_paid:
        payment.status = Payment.Status.COMPLETED
        payment.finished_at = timezone.now()
        payment.save(update_fields=["status", "finished_at", "updated_at"])
        payment_completed.send(
            sender=Payment,
            event=PaymentCompleted(**_event_fields(payment), aggregate_version=_order_version_bump(order)),
        )
        return
    reason = "order_cancelled" if order.status == Order.Status.CANCELLED else "order_already_paid"
    logger.warning(
        "payment captured for an order that cannot take it: refund due",
        extra={"payment_id": payment.id, "order_id": order.id, "reason": reason},
    )
    _refund_required(payment=payment, order=order, reason=reason)


def payment_settle(*, transaction_key: str, status: str, reason: str = "") -> CallbackOutcome:
    """Apply the gateway's word on a payment (callback or reconciliation). Idempotent.

    COMPLETED is recorded whatever the payment's state (a capture is never refused): an order
    that cannot take it makes the payment REFUND_DUE. FAILED applies to an unsettled payment
    only; a decline after a capture raises IllegalTransition (409) and changes nothing.
    Raises Payment.DoesNotExist.
    """
    order_id = Payment.objects.values_list("order_id", flat=True).get(transaction_key=transaction_key)
    with transaction.atomic():
        # The order first, then the payment: the order as every writer of an order's key locks
        # it (a cancel locks the order, then its payments), so that the two never deadlock. The
        # payment's events are events of the order's key, with the order's next version.
        order = Order.objects.select_for_update().get(id=order_id)
        payment = Payment.objects.select_for_update().get(transaction_key=transaction_key)
        if status == Payment.Status.COMPLETED:
            if payment.status in (Payment.Status.COMPLETED, Payment.Status.REFUND_DUE):
                return CallbackOutcome(payment, changed=False)
            _capture_record(payment=payment, order=order)
            return CallbackOutcome(payment, changed=True)
        if payment.status == Payment.Status.FAILED:
            return CallbackOutcome(payment, changed=False)
        if payment.status not in Payment.UNSETTLED:
            raise IllegalTransition(f"payment {transaction_key} is {payment.status}", status=payment.status)
        payment.status = Payment.Status.FAILED
        payment.finished_at = timezone.now()
        payment.failure_reason = (_reason_clean(reason) or "declined")[:200]
        payment.save(update_fields=["status", "failure_reason", "finished_at", "updated_at"])
        payment_failed.send(
            sender=Payment,
            event=PaymentFailed(
                **_event_fields(payment), reason=payment.failure_reason, aggregate_version=_order_version_bump(order)
            ),
        )
    return CallbackOutcome(payment, changed=True)


def payment_complete(*, transaction_key: str) -> Payment:
    """Record a capture (see payment_settle). Raises Payment.DoesNotExist."""
    return payment_settle(transaction_key=transaction_key, status=Payment.Status.COMPLETED).payment


def payment_fail(*, transaction_key: str, reason: str) -> Payment:
    """Fail an unsettled payment (see payment_settle). Raises Payment.DoesNotExist, IllegalTransition."""
    return payment_settle(transaction_key=transaction_key, status=Payment.Status.FAILED, reason=reason).payment


def payment_review_settle(*, transaction_key: str, captured: bool, reviewer: str) -> Payment:
    """A person's decision on a payment under review (NEEDS_REVIEW), taken after checking the
    charge at the gateway: captured (recorded as a capture: COMPLETED, or REFUND_DUE if the
    order cannot take it) or not (FAILED, no money taken). The events and the order's reaction
    are those of the gateway's own answer (`payment_settle`).

    Only a payment still under review: one the gateway settled meanwhile (its callback, the
    reconciliation) is left as the gateway said, IllegalTransition. Raises Payment.DoesNotExist.
    """
    order_id = Payment.objects.values_list("order_id", flat=True).get(transaction_key=transaction_key)
    with transaction.atomic():
        # The locks payment_settle takes, in its order, taken first: the status checked here is
        # the one settled.
        Order.objects.select_for_update().get(id=order_id)
        payment = Payment.objects.select_for_update().get(transaction_key=transaction_key)
        if payment.status != Payment.Status.NEEDS_REVIEW:
            raise IllegalTransition(
                f"payment {transaction_key} is no longer under review: it is {payment.status}",
                status=payment.status,
            )
        outcome = payment_settle(
            transaction_key=transaction_key,
            status=Payment.Status.COMPLETED if captured else Payment.Status.FAILED,
            reason="" if captured else f"no capture at the gateway, checked by {reviewer}",
        )
    logger.warning(
        "payment under review settled by a person",
        extra={
            "transaction_key": transaction_key,
            "order_id": order_id,
            "captured": captured,
            "reviewer": reviewer,
            "status": outcome.payment.status,
        },
    )
    return outcome.payment


def payment_review_ask_gateway(*, transaction_key: str) -> str:
    """Ask the gateway about one payment under review now, as the reconciliation does on its
    next run, and apply its answer; returns the payment's status after it. Nothing is decided
    while the gateway says "processing" or cannot be asked. Raises Payment.DoesNotExist."""
    Payment.objects.get(transaction_key=transaction_key)
    try:
        answer = gateway_get().payment_status(transaction_key=transaction_key)
    except GatewayUnavailable as exc:
        logger.warning(
            "gateway unreachable for a payment under review: nothing decided",
            extra={"transaction_key": transaction_key, "error": str(exc)[:200]},
        )
    else:
        _gateway_answer_apply(transaction_key=transaction_key, state=answer.state, reason=answer.reason)
    return Payment.objects.values_list("status", flat=True).get(transaction_key=transaction_key)


def _gateway_answer_apply(*, transaction_key: str, state: ChargeState, reason: str | None) -> str:
    """The gateway's answer on a payment, applied: "captured", "failed" (declined, or never
    seen: no money was taken), "processing" (nothing decided) or "" (it changed nothing)."""
    if state is ChargeState.COMPLETED:
        changed = payment_settle(transaction_key=transaction_key, status=Payment.Status.COMPLETED).changed
        return "captured" if changed else ""
    if state in (ChargeState.FAILED, ChargeState.UNKNOWN):
        why = (reason or "declined") if state is ChargeState.FAILED else "gateway never received the request"
        with contextlib.suppress(IllegalTransition):  # a capture arrived meanwhile: it stands
            if payment_settle(transaction_key=transaction_key, status=Payment.Status.FAILED, reason=why).changed:
                return "failed"
        return ""
    return "processing"


def payments_refund_for_cancelled_order(*, order_id: int) -> None:
    """Captured payments of an order being cancelled become refund-due, in the cancel's transaction.

    Called by the receiver of `order_cancelled` (payments.receivers), inside the transaction that
    holds the order's lock.
    """
    captured = list(Payment.objects.select_for_update().filter(order_id=order_id, status=Payment.Status.COMPLETED))
    if not captured:
        return
    order = Order.objects.select_for_update().get(id=order_id)
    for payment in captured:
        _refund_required(payment=payment, order=order, reason="order_cancelled")


def _callback_authenticate(*, body: bytes, headers: Mapping[str, str], now: float) -> str:
    """The callback's event id, once its signature and timestamp are good; else InvalidSignature."""
    timestamp = headers.get(TIMESTAMP_HEADER) or ""
    event_id = headers.get(EVENT_ID_HEADER) or ""
    # ASCII digits, at most 12: str.isdigit() is also true of "²", which int() refuses, and a
    # few hundred digits overflow the comparison with the float clock.
    if not TIMESTAMP.fullmatch(timestamp) or not EVENT_ID.fullmatch(event_id):
        raise InvalidSignature(f"missing or malformed {TIMESTAMP_HEADER} or {EVENT_ID_HEADER}")
    if not callback_signature_valid(
        body, timestamp=timestamp, event_id=event_id, signature=headers.get(SIGNATURE_HEADER)
    ):
        raise InvalidSignature(f"bad or missing {SIGNATURE_HEADER}")
    if abs(now - int(timestamp)) > settings.PAYMENT_CALLBACK_TOLERANCE:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is outside the tolerance window")
    return event_id


def _reason_clean(reason: object) -> str:
    """A gateway's reason as text PostgreSQL stores and the event contract carries: not text is
    none, a NUL is dropped, a lone surrogate becomes U+FFFD. Cleaned, never refused: the
    gateway's word on a payment is recorded whatever it says besides (by callback or by
    reconciliation, which would otherwise stop at that payment on every run)."""
    if not isinstance(reason, str):
        return ""
    return LONE_SURROGATE.sub("\ufffd", reason.replace("\x00", ""))


def payment_callback_handle(*, body: bytes, headers: Mapping[str, str], now: float | None = None) -> CallbackOutcome:
    """Verify and apply a gateway callback (the endpoint and the simulated gateway share it).

    The event id is stored with the change in one transaction: a replay is refused and a refused
    callback stores nothing. Raises InvalidSignature (401), ReplayedCallback (409),
    DomainValidationError (400), Payment.DoesNotExist (404), IllegalTransition (409).
    """
    event_id = _callback_authenticate(body=body, headers=headers, now=time.time() if now is None else now)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise DomainValidationError(f"body is not JSON: {type(exc).__name__}", field="non_field_errors") from exc
    if not isinstance(data, dict):
        raise DomainValidationError("body must be a JSON object", field="non_field_errors")
    key = data.get("transaction_key")
    status = data.get("status")
    if not isinstance(key, str) or not TRANSACTION_KEY.fullmatch(key):
        raise DomainValidationError("must be a transaction key (txn_ and 24 hex digits)", field="transaction_key")
    if status not in (Payment.Status.COMPLETED, Payment.Status.FAILED):
        raise DomainValidationError("must be COMPLETED or FAILED", field="status")
    reason = _reason_clean(data.get("reason"))
    with transaction.atomic():
        try:
            with transaction.atomic():
                CallbackReceipt.objects.create(event_id=event_id, transaction_key=key)
        except IntegrityError as exc:
            raise ReplayedCallback(f"callback {event_id} was already received") from exc
        return payment_settle(transaction_key=key, status=status, reason=reason)


@dataclass
class ReconcileResult:
    captured: int = 0
    failed: int = 0
    still_processing: int = 0
    marked_for_review: int = 0
    gateway_unreachable: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _review_mark(*, transaction_key: str) -> bool:
    with transaction.atomic():
        updated = Payment.objects.filter(transaction_key=transaction_key, status=Payment.Status.PENDING).update(
            status=Payment.Status.NEEDS_REVIEW, updated_at=timezone.now()
        )
    if updated:
        logger.warning(
            "payment unsettled past PAYMENT_REVIEW_AFTER: manual review", extra={"transaction_key": transaction_key}
        )
    return bool(updated)


def payment_reconcile(*, now: datetime | None = None) -> ReconcileResult:
    """Settle payments the gateway left unanswered, by asking it; run periodically by beat.

    Only what the gateway says is applied: captured -> recorded (COMPLETED or REFUND_DUE),
    failed or never seen -> FAILED. Still processing, or the gateway unreachable: nothing is
    decided, and past PAYMENT_REVIEW_AFTER the payment is marked NEEDS_REVIEW for a person.
    """
    now = now or timezone.now()
    result = ReconcileResult()
    asked_before = now - timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER)
    review_before = now - timedelta(seconds=settings.PAYMENT_REVIEW_AFTER)
    unsettled = (
        Payment.objects.filter(status__in=Payment.UNSETTLED, created_at__lt=asked_before)
        .order_by("id")
        .values_list("transaction_key", "created_at")
    )
    gateway = gateway_get()
    for key, created_at in list(unsettled):
        try:
            answer = gateway.payment_status(transaction_key=key)
        except GatewayUnavailable as exc:
            logger.warning(
                "gateway unreachable during reconciliation: nothing decided",
                extra={"transaction_key": key, "error": str(exc)[:200]},
            )
            result.gateway_unreachable += 1
            if created_at < review_before:
                result.marked_for_review += _review_mark(transaction_key=key)
            continue
        applied = _gateway_answer_apply(transaction_key=key, state=answer.state, reason=answer.reason)
        result.captured += applied == "captured"
        result.failed += applied == "failed"
        if applied == "processing":
            result.still_processing += 1
            if created_at < review_before:
                result.marked_for_review += _review_mark(transaction_key=key)
    # Older receipts are useless: their callbacks are refused by the timestamp window already.
    keep_after = now - timedelta(seconds=2 * settings.PAYMENT_CALLBACK_TOLERANCE)
    CallbackReceipt.objects.filter(received_at__lt=keep_after).delete()
    return result
