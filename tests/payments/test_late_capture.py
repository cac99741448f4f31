"""Every captured payment is accounted for: a capture is recorded, never refused; one the order
cannot take is REFUND_DUE with a PaymentRefundRequired event."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.models import Product
from orders.models import Order
from orders.services import OrderLineRequest, order_cancel, order_place
from outbox.models import OutboxEvent
from payments.gateway import ChargeState, ChargeStatus, callback_body
from payments.models import Payment
from payments.services import payment_complete, payment_reconcile, payment_request
from tests.factories import product_make, token_for, user_make
from tests.support.gateways import SilentGateway, signed

pytestmark = pytest.mark.django_db

CALLBACK = "/api/payments/callback/"


@pytest.fixture(autouse=True)
def _silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    settings.PAYMENT_RECONCILE_AFTER = 30


def _pending_payment(*, stock: int = 5, price: str = "12.50") -> tuple[Product, Payment]:
    user = user_make()
    product = product_make(stock=stock, price=price)
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=2)])
    return product, payment_request(user=user, order_id=order.id, card_type="AMEX")


def _callback(client, key: str, status: str = "COMPLETED", **sign):
    body = callback_body(transaction_key=key, status=status)
    return client.post(CALLBACK, body, content_type="application/json", **signed(body, **sign))


def _types_of(order_id: int) -> list[str]:
    return list(
        OutboxEvent.objects.filter(aggregatetype="order", aggregateid=str(order_id))
        .order_by("seq")
        .values_list("type", flat=True)
    )


def test_a_late_success_after_the_timeout_is_recorded_and_confirms_the_order(
    client, celery_eager, django_capture_on_commit_callbacks
):
    # given: the gateway is slow; the reconciliation ran past the timeout
    _, payment = _pending_payment()
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.PROCESSING)
    with django_capture_on_commit_callbacks(execute=True):
        payment_reconcile(now=timezone.now() + timedelta(seconds=31))
    # when: the success arrives
    with django_capture_on_commit_callbacks(execute=True):
        response = _callback(client, payment.transaction_key)
    # then: captured money is recorded (old code: 409 and nothing saved)
    assert response.status_code == 200, response.content
    assert Payment.objects.get(id=payment.id).status == Payment.Status.COMPLETED
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CONFIRMED
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentCompleted", "OrderConfirmed"]


def test_cancel_while_pending_then_success_makes_the_payment_refund_due(
    client, celery_eager, django_capture_on_commit_callbacks
):
    # given: the user cancels while the gateway is still charging
    product, payment = _pending_payment(stock=5, price="12.50")
    order_cancel(order_id=payment.order_id, reason="changed my mind")
    # when: the capture arrives
    with django_capture_on_commit_callbacks(execute=True):
        response = _callback(client, payment.transaction_key)
    # then: recorded as captured and refund-due, the order stays cancelled, the stock restored
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "REFUND_DUE"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUND_DUE
    assert payment.refund_reason == "order_cancelled"
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CANCELLED
    assert Product.objects.get(id=product.id).stock == 5
    assert _types_of(payment.order_id) == ["OrderCreated", "OrderCancelled", "PaymentRefundRequired"]
    row = OutboxEvent.objects.get(type="PaymentRefundRequired")
    assert row.topic == "order-events"
    assert row.key == str(payment.order_id)
    assert row.payload == {
        "payment_id": str(payment.id),
        "order_id": str(payment.order_id),
        "user_id": str(payment.user_id),
        "amount": "25.00",
        "card_type": "AMEX",
        "reason": "order_cancelled",
        "occurred_at": row.payload["occurred_at"],
    }
    assert Decimal(row.payload["amount"]) == payment.amount


def test_a_success_callback_delivered_twice_is_applied_once(client, celery_eager, django_capture_on_commit_callbacks):
    _, payment = _pending_payment()
    stamp = int(timezone.now().timestamp())
    with django_capture_on_commit_callbacks(execute=True):
        first = _callback(client, payment.transaction_key, timestamp=stamp, event_id="evt_same")
    rows = OutboxEvent.objects.count()
    # the very same delivery again (same event id): a replay, refused
    replay = _callback(client, payment.transaction_key, timestamp=stamp, event_id="evt_same")
    # the gateway's retry as a new callback: acknowledged, nothing changes
    retry = _callback(client, payment.transaction_key)
    assert first.status_code == 200
    assert first.json()["changed"] is True
    assert replay.status_code == 409
    assert replay.json()["code"] == "replayed"
    assert retry.status_code == 200
    assert retry.json()["changed"] is False
    assert OutboxEvent.objects.count() == rows
    assert _types_of(payment.order_id).count("PaymentCompleted") == 1


def test_a_capture_after_the_payment_was_failed_is_recorded_not_refused(
    client, celery_eager, django_capture_on_commit_callbacks
):
    # given: the gateway said it never saw the charge, the payment failed, the order was cancelled
    _, payment = _pending_payment()
    with django_capture_on_commit_callbacks(execute=True):
        payment_reconcile(now=timezone.now() + timedelta(seconds=31))
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CANCELLED
    # when: the gateway contradicts itself with a capture
    response = _callback(client, payment.transaction_key)
    # then: the money is on record, to be refunded
    assert response.status_code == 200, response.content
    assert Payment.objects.get(id=payment.id).status == Payment.Status.REFUND_DUE
    assert _types_of(payment.order_id)[-1] == "PaymentRefundRequired"


def test_cancelling_a_paid_order_makes_its_payment_refund_due(client, celery_eager, django_capture_on_commit_callbacks):
    _, payment = _pending_payment()
    with django_capture_on_commit_callbacks(execute=True):
        _callback(client, payment.transaction_key)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(payment.user)}")
    response = api.post(f"/api/orders/{payment.order_id}/cancel/", {}, format="json")
    assert response.status_code == 200
    assert Payment.objects.get(id=payment.id).status == Payment.Status.REFUND_DUE
    assert _types_of(payment.order_id) == [
        "OrderCreated",
        "PaymentCompleted",
        "OrderConfirmed",
        "OrderCancelled",
        "PaymentRefundRequired",
    ]


def test_the_admin_lists_the_payments_to_refund(admin_client):
    # given: one refund due, one completed, one pending
    _, due = _pending_payment()
    order_cancel(order_id=due.order_id, reason="x")
    payment_complete(transaction_key=due.transaction_key)
    _, completed = _pending_payment()
    payment_complete(transaction_key=completed.transaction_key)
    _pending_payment()
    # when
    page = admin_client.get(reverse("admin:payments_refundduepayment_changelist"))
    # then
    assert page.status_code == 200
    listed = {payment.transaction_key for payment in page.context["cl"].result_list}
    assert listed == {due.transaction_key}
    assert b"order_cancelled" in page.content
