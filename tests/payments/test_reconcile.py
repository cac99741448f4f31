"""payments.reconcile repairs orders whose after-commit reaction was lost, and times out
payments the gateway never answered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Product
from orders.models import Coupon, Order
from orders.services import OrderLineRequest, order_place
from outbox.models import OutboxEvent
from payments.models import Payment
from payments.services import payment_complete, payment_fail, payment_reconcile, payment_request
from payments.tasks import reconcile
from tests.factories import coupon_make, product_make, user_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _silent_gateway(settings):  # noqa: ANN001, ANN202
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"


def _pending_payment(*, stock: int = 5, with_coupon: bool = False) -> tuple[Product, Payment]:
    user = user_make()
    product = product_make(stock=stock)
    coupon = coupon_make(owner=user) if with_coupon else None
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=2)],
                        coupon_code=coupon.code if coupon else None)
    return product, payment_request(user=user, order_id=order.id, card_type="VISA")


def _types_of(order_id: int) -> list[str]:
    return list(OutboxEvent.objects.filter(aggregatetype="order", aggregateid=str(order_id)).order_by("seq")
                .values_list("type", flat=True))


def test_a_completed_payment_whose_reaction_was_lost_gets_its_order_confirmed():
    # given: the payment completed, but its on-commit reaction never ran (not captured here)
    _, payment = _pending_payment()
    payment_complete(transaction_key=payment.transaction_key)
    assert Order.objects.get(id=payment.order_id).status == Order.Status.PENDING_PAYMENT
    # when
    result = reconcile.apply().get()
    # then
    assert result == {"orders_repaired": 1, "payments_timed_out": 0}
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CONFIRMED
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentCompleted", "OrderConfirmed"]
    # and a second run finds nothing left to do
    assert payment_reconcile() == {"orders_repaired": 0, "payments_timed_out": 0}
    assert _types_of(payment.order_id).count("OrderConfirmed") == 1


def test_a_failed_payment_whose_reaction_was_lost_gets_its_order_cancelled_and_restored():
    # given
    product, payment = _pending_payment(stock=5, with_coupon=True)
    payment_fail(transaction_key=payment.transaction_key, reason="card declined")
    # when
    payment_reconcile()
    # then
    order = Order.objects.get(id=payment.order_id)
    assert order.status == Order.Status.CANCELLED
    assert Product.objects.get(id=product.id).stock == 5
    coupon = Coupon.objects.get(id=order.coupon_id)
    assert coupon.used_at is None and coupon.used_by_order is None
    cancelled = OutboxEvent.objects.get(aggregatetype="order", aggregateid=str(order.id), type="OrderCancelled")
    assert cancelled.payload["reason"] == "payment failed: card declined"
    assert cancelled.payload["was_confirmed"] is False


def test_a_payment_the_gateway_never_answered_fails_after_the_timeout(settings):
    # given
    settings.PAYMENT_RECONCILE_AFTER = 30
    _, payment = _pending_payment()
    # when: too early, nothing happens
    assert payment_reconcile() == {"orders_repaired": 0, "payments_timed_out": 0}
    # when: later than the timeout
    result = payment_reconcile(now=timezone.now() + timedelta(seconds=31))
    # then: the payment failed; its order follows through the on-commit reaction or the next run
    assert result["payments_timed_out"] == 1
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_reason == "gateway timeout"
    payment_reconcile()
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CANCELLED
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentFailed", "OrderCancelled"]
