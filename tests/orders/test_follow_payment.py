"""Orders follow a finished payment after commit; `orders.follow_lost_payments` repairs an order
whose reaction was lost."""

from __future__ import annotations

import pytest

from catalog.models import Product
from orders.models import Coupon, Order
from orders.services import OrderLineRequest, order_place
from orders.tasks import follow_lost_payments
from outbox.models import OutboxEvent
from payments.models import Payment
from payments.services import payment_complete, payment_fail, payment_request
from tests.factories import coupon_make, product_make, user_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"


def _pending_payment(*, stock: int = 5, with_coupon: bool = False) -> tuple[Product, Payment]:
    user = user_make()
    product = product_make(stock=stock)
    coupon = coupon_make(owner=user) if with_coupon else None
    order = order_place(
        user=user,
        lines=[OrderLineRequest(product_id=product.id, quantity=2)],
        coupon_code=coupon.code if coupon else None,
    )
    return product, payment_request(user=user, order_id=order.id, card_type="VISA")


def _types_of(order_id: int) -> list[str]:
    return list(
        OutboxEvent.objects.filter(aggregatetype="order", aggregateid=str(order_id))
        .order_by("seq")
        .values_list("type", flat=True)
    )


def test_a_completed_payment_whose_reaction_was_lost_gets_its_order_confirmed():
    # given: the payment completed, but its on-commit reaction never ran (not captured here)
    _, payment = _pending_payment()
    payment_complete(transaction_key=payment.transaction_key)
    assert Order.objects.get(id=payment.order_id).status == Order.Status.PENDING_PAYMENT
    # when
    result = follow_lost_payments.apply().get()
    # then
    assert result == {"orders_repaired": 1}
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CONFIRMED
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentCompleted", "OrderConfirmed"]
    # and a second run finds nothing left to do
    assert follow_lost_payments.apply().get() == {"orders_repaired": 0}
    assert _types_of(payment.order_id).count("OrderConfirmed") == 1


def test_a_failed_payment_whose_reaction_was_lost_gets_its_order_cancelled_and_restored():
    # given
    product, payment = _pending_payment(stock=5, with_coupon=True)
    payment_fail(transaction_key=payment.transaction_key, reason="card declined")
    # when
    follow_lost_payments.apply().get()
    # then
    order = Order.objects.get(id=payment.order_id)
    assert order.status == Order.Status.CANCELLED
    assert Product.objects.get(id=product.id).stock == 5
    assert order.coupon_id is not None
    coupon = Coupon.objects.get(id=order.coupon_id)
    assert coupon.used_at is None
    assert coupon.used_by_order is None
    cancelled = OutboxEvent.objects.get(aggregatetype="order", aggregateid=str(order.id), type="OrderCancelled")
    assert cancelled.payload["reason"] == "payment failed: card declined"
    assert cancelled.payload["was_confirmed"] is False


def test_the_reaction_runs_after_commit_as_a_task(celery_eager, django_capture_on_commit_callbacks):
    _, payment = _pending_payment()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        payment_complete(transaction_key=payment.transaction_key)
    assert len(callbacks) == 1
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CONFIRMED
