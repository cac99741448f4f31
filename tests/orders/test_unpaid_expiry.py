"""An order nobody pays gives its stock back: `orders.expire_unpaid` (beat) cancels orders awaiting
payment for longer than ORDER_PAYMENT_TIMEOUT_MINUTES that have no payment open or captured.

Before, nothing ever ended an unpaid order: anyone could take a product's whole stock off sale
by placing orders and never paying."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections, transaction
from django.utils import timezone

from catalog.models import Product
from commerce.errors import DomainValidationError
from orders.models import Coupon, Order
from orders.services import OrderLineRequest, order_place
from outbox.models import OutboxEvent
from payments.models import Payment
from payments.services import payment_complete, payment_fail, payment_request
from tests.factories import coupon_make, product_make, token_for, user_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = 30


def _placed(product: Product, *, minutes_ago: float, quantity: int = 2, with_coupon: bool = False) -> Order:
    user = user_make()
    coupon = coupon_make(owner=user) if with_coupon else None
    order = order_place(
        user=user,
        lines=[OrderLineRequest(product_id=product.id, quantity=quantity)],
        coupon_code=coupon.code if coupon else None,
    )
    Order.objects.filter(id=order.id).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return order


def _expire() -> object:
    import orders.tasks  # noqa: F401 - registers the task, as the worker's autodiscovery does
    from commerce.celery import app

    # The beat's entry, by its task name: what production runs.
    entry = next(e for e in django_settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "orders.expire_unpaid")
    return app.tasks[entry["task"]].apply(kwargs=entry.get("kwargs", {})).get()


def _stock(product: Product) -> int:
    return Product.objects.get(id=product.id).stock


def test_an_order_unpaid_past_the_timeout_is_cancelled_and_its_stock_goes_back_on_sale():
    # given a product whose whole stock two orders hold, one placed 31 minutes ago, never paid
    product = product_make(stock=4)
    old = _placed(product, minutes_ago=31, with_coupon=True)
    young = _placed(product, minutes_ago=5)
    assert _stock(product) == 0
    # when the beat's expiry runs
    result = _expire()
    # then the old order is cancelled with its reason, its units and coupon are given back,
    # and the events say so (OrderCancelled, StockChanged); the young one is untouched
    assert result == {"orders_expired": 1}
    old.refresh_from_db()
    assert old.status == Order.Status.CANCELLED
    assert "not paid within 30 minutes" in old.cancel_reason
    assert _stock(product) == 2
    assert Order.objects.get(id=young.id).status == Order.Status.PENDING_PAYMENT
    cancelled = OutboxEvent.objects.get(type="OrderCancelled", aggregateid=str(old.id))
    assert "not paid within 30 minutes" in cancelled.payload["reason"]
    restored = OutboxEvent.objects.filter(type="StockChanged", aggregateid=str(product.id)).latest("seq").payload
    assert (restored["reason"], restored["delta"], restored["quantity"]) == ("restore", 2, 2)
    assert restored["order_id"] == str(old.id)
    assert Coupon.objects.get(owner=old.user).used_by_order is None
    # and a second run finds nothing more to do
    assert _expire() == {"orders_expired": 0}


def test_an_order_with_a_payment_open_or_captured_is_not_expired():
    # given three old orders: one whose payment is at the gateway, one paid whose confirmation
    # has not run yet, one whose payment failed (and its reaction was lost)
    product = product_make(stock=10)
    at_gateway, paid, failed = (_placed(product, minutes_ago=90) for _ in range(3))
    payment_request(user=at_gateway.user, order_id=at_gateway.id, card_type="VISA")
    payment = payment_request(user=paid.user, order_id=paid.id, card_type="VISA")
    payment_complete(transaction_key=payment.transaction_key)
    payment = payment_request(user=failed.user, order_id=failed.id, card_type="VISA")
    payment_fail(transaction_key=payment.transaction_key, reason="declined")
    Order.objects.filter(id=failed.id).update(status=Order.Status.PENDING_PAYMENT)
    # when the expiry runs
    result = _expire()
    # then only the order with no payment open or captured is cancelled: the gateway's answer
    # (or the confirmation) decides the other two
    assert result == {"orders_expired": 1}
    statuses = dict(Order.objects.filter(id__in=[at_gateway.id, paid.id, failed.id]).values_list("id", "status"))
    assert statuses[at_gateway.id] == Order.Status.PENDING_PAYMENT
    assert statuses[paid.id] == Order.Status.PENDING_PAYMENT
    assert statuses[failed.id] == Order.Status.CANCELLED
    assert not Payment.objects.filter(status=Payment.Status.REFUND_DUE).exists()


def test_a_payment_asked_for_after_the_expiry_is_refused(api_client):
    # given an order expired for want of payment
    product = product_make(stock=2)
    order = _placed(product, minutes_ago=45)
    _expire()
    # when its customer asks to pay it
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(order.user)}")
    answer = api_client.post("/api/payments/", {"order_id": order.id, "card_type": "VISA"}, format="json")
    # then the API says the order is cancelled, and nothing is charged
    assert answer.status_code == 409, answer.content
    assert "CANCELLED" in answer.content.decode()
    assert not Payment.objects.filter(order_id=order.id).exists()


def test_a_timeout_of_zero_never_expires_an_order(settings):
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = 0
    product = product_make(stock=2)
    order = _placed(product, minutes_ago=60 * 24 * 365)
    assert _expire() == {"orders_expired": 0}
    assert Order.objects.get(id=order.id).status == Order.Status.PENDING_PAYMENT


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_payment_asked_for_while_the_expiry_waits_for_the_order_keeps_it():
    if connection.vendor != "postgresql":
        pytest.fail("a race of two sessions: run with DATABASE_URL=postgres://...")
    # given an old unpaid order, and its customer's payment request holding the order's lock
    # (recorded, not yet committed) when the expiry comes to it
    product = product_make(stock=2)
    order = _placed(product, minutes_ago=45)
    requested, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def pay() -> None:
        try:
            with transaction.atomic():
                payment_request(user=order.user, order_id=order.id, card_type="VISA")
                requested.set()
                release.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    payer = threading.Thread(target=pay)
    payer.start()
    assert requested.wait(10)
    threading.Timer(0.5, release.set).start()  # the expiry's lock waits on the payment's
    try:
        # when the expiry runs meanwhile
        result = _expire()
    finally:
        release.set()
        payer.join(10)
    # then the order is left to its payment (before: cancelled as "not paid", the payment
    # then captured for a cancelled order, refund due)
    assert errors == []
    assert result == {"orders_expired": 0}
    assert Order.objects.get(id=order.id).status == Order.Status.PENDING_PAYMENT
    assert Payment.objects.get(order_id=order.id).status == Payment.Status.PENDING
    assert _stock(product) == 0


def test_an_order_that_cannot_be_cancelled_does_not_stop_the_others(monkeypatch):
    # given two old unpaid orders, the first of which cannot be cancelled (a restore past the
    # stock bound, say)
    import orders.services

    product = product_make(stock=4)
    stuck, other = _placed(product, minutes_ago=60), _placed(product, minutes_ago=60)
    cancel = orders.services.order_cancel

    def cancel_refusing_the_first(*, order_id: int, reason: str) -> Order:
        if order_id == stuck.id:
            raise DomainValidationError("restoring 2 would pass the stock bound", field="stock")
        return cancel(order_id=order_id, reason=reason)

    monkeypatch.setattr(orders.services, "order_cancel", cancel_refusing_the_first)
    # when the expiry runs, then the other one is expired all the same (before, the run stopped
    # at the first, and every later run stopped there again)
    assert _expire() == {"orders_expired": 1}
    assert Order.objects.get(id=stuck.id).status == Order.Status.PENDING_PAYMENT
    assert Order.objects.get(id=other.id).status == Order.Status.CANCELLED
