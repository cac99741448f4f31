"""Order use cases: place (reserve stock, use the coupon), confirm, cancel (restore both).

Each is one transaction. Products are locked in id order, so concurrent orders of the same
products wait for each other instead of deadlocking, and no unit is sold twice. Placing and
cancelling record an event per line besides the order's own: `outbox_atomic()` writes them
with one INSERT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypedDict

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from catalog.models import Product
from catalog.services import product_stock_reserve, product_stock_restore
from commerce.errors import DomainValidationError, IllegalTransition
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderLinePayload, OrderLineTotalPayload
from orders.models import CENT, Coupon, Order, OrderLine
from orders.signals import order_cancelled, order_confirmed, order_created
from outbox.recording import outbox_atomic
from payments.models import Payment
from payments.selectors import payment_finished_for_pending_orders, payment_get

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OrderLineRequest:
    product_id: int
    quantity: int


class _SnapshotFields(TypedDict):
    order_id: str
    order_number: str
    user_id: str
    original_total: Decimal
    discount: Decimal
    final_total: Decimal


class _Snapshot(_SnapshotFields):
    """The fields OrderCreated and OrderCancelled share: the order as it is now."""

    lines: tuple[OrderLinePayload, ...]


class _ConfirmedSnapshot(_SnapshotFields):
    """OrderConfirmed v2's: line subtotals and the shop's currency."""

    lines: tuple[OrderLineTotalPayload, ...]
    currency: str


def _snapshot(order: Order, lines: list[OrderLine] | None = None) -> _Snapshot:
    """`lines`: the order's lines when the caller has them (it has just written them), saving
    the round trip that reads them back; read from the database otherwise."""
    ordered = (
        sorted(lines, key=lambda line: line.product_id) if lines is not None else order.lines.order_by("product_id")
    )
    payload_lines = tuple(
        OrderLinePayload(product_id=str(line.product_id), quantity=line.quantity, unit_price=line.unit_price)
        for line in ordered
    )
    return {
        "order_id": str(order.id),
        "order_number": order.number,
        "user_id": str(order.user_id),
        "original_total": order.original_total,
        "discount": order.discount,
        "final_total": order.final_total,
        "lines": payload_lines,
    }


def _confirmed_snapshot(order: Order) -> _ConfirmedSnapshot:
    """The snapshot of OrderConfirmed v2: line subtotals and the shop's currency."""
    snapshot = _snapshot(order)
    lines = tuple(
        OrderLineTotalPayload(
            product_id=line.product_id,
            quantity=line.quantity,
            unit_price=line.unit_price,
            subtotal=line.quantity * line.unit_price,
        )
        for line in snapshot["lines"]
    )
    return {**snapshot, "lines": lines, "currency": settings.SHOP_CURRENCY}


def _amount_max(model: type[models.Model], field_name: str) -> Decimal:
    field = model._meta.get_field(field_name)
    assert isinstance(field, models.DecimalField)
    digits, places = field.max_digits or 0, field.decimal_places or 0
    return Decimal(10) ** (digits - places) - Decimal(1).scaleb(-places)


# The largest total the order's amount columns hold (numeric(12, 2)): a larger one was a 500, and
# on SQLite a committed order that no read of the user's orders could load again.
ORDER_TOTAL_MAX = _amount_max(Order, "original_total")
COUPON_VALUE_MAX = _amount_max(Coupon, "value")
CODE_MAX_LENGTH = Coupon._meta.get_field("code").max_length or 0


def _lines_validate(lines: list[OrderLineRequest]) -> None:
    if not lines:
        raise DomainValidationError("an order needs at least one line", field="lines")
    seen: set[int] = set()
    for line in lines:
        if line.quantity < 1:
            raise DomainValidationError(f"quantity of product {line.product_id} must be at least 1", field="lines")
        if line.product_id in seen:
            raise DomainValidationError(f"product {line.product_id} appears on more than one line", field="lines")
        seen.add(line.product_id)


def _coupon_lock_usable(*, code: str, user: User) -> Coupon:
    coupon = Coupon.objects.select_for_update().filter(code=code).first()
    if coupon is None or coupon.owner_id != user.pk:
        # Someone else's coupon reads as unknown: its existence is not the caller's business.
        raise DomainValidationError(f"unknown coupon {code!r}", field="coupon_code")
    if coupon.used_at is not None:
        raise DomainValidationError(f"coupon {code!r} has already been used", field="coupon_code")
    if coupon.expires_at <= timezone.now():
        raise DomainValidationError(f"coupon {code!r} has expired", field="coupon_code")
    return coupon


def coupon_create(*, code: str, owner: User, kind: str, value: Decimal, expires_at: datetime) -> Coupon:
    """Issue a single-use coupon to `owner`. Raises DomainValidationError (400) for bad terms."""
    if kind not in Coupon.Kind.values:
        raise DomainValidationError(f"unknown coupon kind {kind!r}", field="kind")
    if value <= 0 or (kind == Coupon.Kind.PERCENT and value > 100):
        raise DomainValidationError("must be positive, and at most 100 for a percentage", field="value")
    if value > COUPON_VALUE_MAX or value != value.quantize(CENT):
        raise DomainValidationError(f"must be at most {COUPON_VALUE_MAX}, in cents", field="value")
    if not 1 <= len(code) <= CODE_MAX_LENGTH or "\x00" in code:
        raise DomainValidationError(f"must be 1 to {CODE_MAX_LENGTH} characters, without NUL", field="code")
    if Coupon.objects.filter(code=code).exists():
        raise DomainValidationError(f"coupon {code!r} already exists", field="code")
    try:
        with transaction.atomic():
            return Coupon.objects.create(code=code, owner=owner, kind=kind, value=value, expires_at=expires_at)
    except IntegrityError as exc:
        # Created by another session since the check above (its INSERT committed first).
        raise DomainValidationError(f"coupon {code!r} already exists", field="code") from exc


def order_place(*, user: User, lines: list[OrderLineRequest], coupon_code: str | None = None) -> Order:
    """Place an order: reserve every line's stock and use the coupon, all or nothing.

    Raises DomainValidationError (400: lines, coupon_code) and InsufficientStock (409).
    """
    _lines_validate(lines)
    with outbox_atomic():
        product_ids = sorted(line.product_id for line in lines)
        products = {p.id: p for p in Product.objects.select_for_update().filter(id__in=product_ids).order_by("id")}
        missing = [pid for pid in product_ids if pid not in products]
        if missing:
            raise DomainValidationError(f"unknown product {missing[0]}", field="lines")
        coupon = _coupon_lock_usable(code=coupon_code, user=user) if coupon_code else None

        original_total = sum((products[line.product_id].price * line.quantity for line in lines), Decimal("0.00"))
        if original_total > ORDER_TOTAL_MAX:
            raise DomainValidationError(f"the order's total {original_total} is over {ORDER_TOTAL_MAX}", field="lines")
        discount = coupon.discount_for(original_total) if coupon else Decimal("0.00")
        # OrderCreated is the order's first event: version 1 from the start (the row is new,
        # nobody else can see it before the commit).
        order = Order.objects.create(
            user=user,
            original_total=original_total,
            discount=discount,
            final_total=original_total - discount,
            coupon=coupon,
            version=1,
        )
        order_lines = OrderLine.objects.bulk_create(
            [
                OrderLine(
                    order=order,
                    product=products[line.product_id],
                    quantity=line.quantity,
                    unit_price=products[line.product_id].price,
                )
                for line in lines
            ]
        )
        for line in sorted(lines, key=lambda item: item.product_id):
            product_stock_reserve(product=products[line.product_id], quantity=line.quantity, order_id=order.id)
        if coupon is not None:
            coupon.used_at = timezone.now()
            coupon.used_by_order = order
            coupon.save(update_fields=["used_at", "used_by_order"])
        order_created.send(
            sender=Order,
            event=OrderCreated(
                **_snapshot(order, order_lines),
                coupon_code=coupon.code if coupon else None,
                aggregate_version=order.version,
            ),
        )
    return order


def order_confirm(*, order_id: int) -> Order:
    """Confirm a paid order. Confirming a confirmed order changes nothing and emits nothing.

    Raises IllegalTransition (409) for a cancelled order.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order_id)
        if order.status == Order.Status.CONFIRMED:
            return order
        if order.status != Order.Status.PENDING_PAYMENT:
            raise IllegalTransition(f"order {order.number} is {order.status}", status=order.status)
        order.status = Order.Status.CONFIRMED
        order.confirmed_at = timezone.now()
        aggregate_version = order.version_bump()
        order.save(update_fields=["status", "confirmed_at", "version", "updated_at"])
        order_confirmed.send(
            sender=Order, event=OrderConfirmed(**_confirmed_snapshot(order), aggregate_version=aggregate_version)
        )
    return order


def order_cancel(*, order_id: int, reason: str, user: User | None = None) -> Order:
    """Cancel an order, restoring its stock and releasing its coupon, exactly once.

    With `user`, only that user's order is found (Order.DoesNotExist otherwise).
    Raises IllegalTransition (409) when the order is already cancelled.
    """
    with outbox_atomic():
        orders = Order.objects.select_for_update()
        if user is not None:
            orders = orders.filter(user=user)
        order = orders.get(id=order_id)
        if order.status == Order.Status.CANCELLED:
            raise IllegalTransition(f"order {order.number} is already cancelled", status=order.status)
        was_confirmed = order.status == Order.Status.CONFIRMED
        lines = list(order.lines.all().order_by("product_id"))
        products = {
            p.id: p
            for p in Product.objects.select_for_update()
            .filter(id__in=[line.product_id for line in lines])
            .order_by("id")
        }
        for line in lines:
            product_stock_restore(product=products[line.product_id], quantity=line.quantity, order_id=order.id)
        coupon = Coupon.objects.select_for_update().filter(used_by_order=order).first()
        if coupon is not None:
            coupon.used_at = None
            coupon.used_by_order = None
            coupon.save(update_fields=["used_at", "used_by_order"])
        order.status = Order.Status.CANCELLED
        order.cancelled_at = timezone.now()
        order.cancel_reason = reason[:200]
        aggregate_version = order.version_bump()
        order.save(update_fields=["status", "cancelled_at", "cancel_reason", "version", "updated_at"])
        order_cancelled.send(
            sender=Order,
            event=OrderCancelled(
                **_snapshot(order),
                reason=order.cancel_reason,
                was_confirmed=was_confirmed,
                aggregate_version=aggregate_version,
            ),
        )
    return order


def order_follow_payment(*, payment_id: int) -> None:
    """Confirm or cancel the order of a finished payment. Safe to run any number of times.

    A failed payment cancels the order only when no other payment of it is open or captured (a
    retry, or a late capture of an earlier payment): that one's outcome decides.

    A completed payment whose order was cancelled meanwhile was made refund-due by that
    cancellation (payments.receivers): nothing is left to do here.
    """
    payment = payment_get(payment_id=payment_id)
    if payment.status == Payment.Status.COMPLETED:
        with contextlib.suppress(IllegalTransition):  # cancelled meanwhile: refund-due already, see above
            order_confirm(order_id=payment.order_id)
    elif payment.status == Payment.Status.FAILED:
        with outbox_atomic():
            # Under the order's lock, as a retry of the payment takes it (payment_request): a
            # failure whose reaction comes after the customer retried does not cancel the order
            # the retry may still pay; the retry's own outcome decides.
            order = Order.objects.select_for_update().filter(id=payment.order_id).first()
            if order is None or order.status != Order.Status.PENDING_PAYMENT:
                return
            if order.payments.filter(status__in=Payment.OPEN_OR_CAPTURED).exists():
                return
            with contextlib.suppress(IllegalTransition):  # cancelled meanwhile: nothing left to do
                order_cancel(order_id=payment.order_id, reason=f"payment failed: {payment.failure_reason}")


# The expiry takes the orders due in chunks of this many, each order in a transaction of its own,
# until none is left or its time is up (the next beat run goes on).
EXPIRE_CHUNK = 200
EXPIRE_BUDGET_S = 50.0


def orders_expire_unpaid() -> int:
    """Cancel the orders awaiting payment for longer than ORDER_PAYMENT_TIMEOUT_MINUTES that have
    no payment open or captured: their stock goes back on sale, their coupon back to its owner
    (OrderCancelled and StockChanged say so). Beat; returns how many it cancelled.

    The age is read on the database's clock against `created_at` (written by the web host that
    placed the order): a worker whose clock is off cancels nothing early. An order whose payment
    is at the gateway, or captured and not yet followed, is left to that payment's outcome.

    Each order is locked first and looked at again after, in statements of their own: a payment
    request holds the same lock while it records its payment, and on PostgreSQL a statement
    that waited for the lock still sees what it saw when it started (READ COMMITTED), so a
    check folded into the locking statement missed the payment committed meanwhile and
    cancelled an order being paid. An order that cannot be cancelled (a restore past
    STOCK_MAX, say) is logged and skipped, not retried before the others.
    """
    minutes = settings.ORDER_PAYMENT_TIMEOUT_MINUTES
    if not minutes:
        return 0
    cutoff = models.ExpressionWrapper(
        models.functions.Now() - models.Value(timedelta(minutes=minutes)), output_field=models.DateTimeField()
    )
    due = Order.objects.filter(status=Order.Status.PENDING_PAYMENT, created_at__lt=cutoff).exclude(
        payments__status__in=Payment.OPEN_OR_CAPTURED
    )
    expired, last_id = 0, 0
    deadline = time.monotonic() + EXPIRE_BUDGET_S
    while time.monotonic() < deadline:
        chunk = list(due.filter(id__gt=last_id).order_by("id").values_list("id", flat=True)[:EXPIRE_CHUNK])
        if not chunk:
            break
        last_id = chunk[-1]
        for order_id in chunk:
            try:
                if _order_expire(order_id=order_id, minutes=minutes):
                    expired += 1
            except Exception:  # one order must not stop the others; logged with its id
                logger.exception("unpaid order not expired", extra={"order_id": order_id})
    return expired


def _order_expire(*, order_id: int, minutes: float) -> bool:
    """Cancel one unpaid order if, under its lock, it still awaits payment with none open or
    captured; whether it did."""
    with outbox_atomic():
        order = Order.objects.select_for_update().filter(id=order_id).first()
        if order is None or order.status != Order.Status.PENDING_PAYMENT:
            return False  # paid and confirmed, or cancelled, meanwhile
        if order.payments.filter(status__in=Payment.OPEN_OR_CAPTURED).exists():
            return False  # a payment asked for meanwhile: its outcome decides
        order_cancel(order_id=order.id, reason=f"payment timeout: not paid within {minutes:g} minutes")
    return True


def order_payments_follow_lost() -> int:
    """Orders still awaiting payment whose payment finished follow it (a lost reaction); beat."""
    repaired = 0
    for payment_id in list(payment_finished_for_pending_orders().values_list("id", flat=True)):
        order_follow_payment(payment_id=payment_id)
        repaired += 1
    return repaired
