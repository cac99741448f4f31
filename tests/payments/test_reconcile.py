"""payments.reconcile asks the gateway before it decides anything about an unanswered payment."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Product
from orders.models import Order
from orders.services import OrderLineRequest, order_payments_follow_lost, order_place
from outbox.models import OutboxEvent
from payments.gateway import ChargeState, ChargeStatus
from payments.models import Payment
from payments.services import payment_reconcile, payment_request
from payments.tasks import reconcile
from tests.factories import product_make, user_make
from tests.support.gateways import SilentGateway

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    settings.PAYMENT_RECONCILE_AFTER = 30
    settings.PAYMENT_REVIEW_AFTER = 3600


def _pending_payment(*, stock: int = 5) -> tuple[Product, Payment]:
    user = user_make()
    product = product_make(stock=stock)
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=2)])
    return product, payment_request(user=user, order_id=order.id, card_type="VISA")


def _types_of(order_id: int) -> list[str]:
    return list(
        OutboxEvent.objects.filter(aggregatetype="order", aggregateid=str(order_id))
        .order_by("seq")
        .values_list("type", flat=True)
    )


def _later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def test_nothing_is_asked_before_the_payment_is_due():
    _, payment = _pending_payment()
    SilentGateway.unreachable = True  # would be counted if asked
    assert payment_reconcile().gateway_unreachable == 0
    assert Payment.objects.get(id=payment.id).status == Payment.Status.PENDING


def test_a_payment_the_gateway_still_processes_is_not_failed():
    # given: the gateway has the charge and no outcome yet
    _, payment = _pending_payment()
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.PROCESSING)
    # when: past PAYMENT_RECONCILE_AFTER (old code failed it here with "gateway timeout")
    result = payment_reconcile(now=_later(31))
    # then
    assert result.still_processing == 1
    assert result.failed == 0
    assert Payment.objects.get(id=payment.id).status == Payment.Status.PENDING
    assert _types_of(payment.order_id) == ["OrderCreated"]


def test_a_payment_still_processing_past_the_review_limit_goes_to_manual_review_not_failed():
    _, payment = _pending_payment()
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.PROCESSING)
    result = payment_reconcile(now=_later(3601))
    assert result.marked_for_review == 1
    payment.refresh_from_db()
    assert payment.status == Payment.Status.NEEDS_REVIEW
    assert Order.objects.get(id=payment.order_id).status == Order.Status.PENDING_PAYMENT
    assert _types_of(payment.order_id) == ["OrderCreated"]
    # and a later answer of the gateway still settles it
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.COMPLETED)
    assert payment_reconcile(now=_later(3700)).captured == 1
    assert Payment.objects.get(id=payment.id).status == Payment.Status.COMPLETED


def test_the_gateway_unreachable_during_reconciliation_decides_nothing():
    # given
    _, payment = _pending_payment()
    SilentGateway.unreachable = True
    # when
    result = payment_reconcile(now=_later(31))
    # then
    assert result.gateway_unreachable == 1
    assert (result.failed, result.captured, result.marked_for_review) == (0, 0, 0)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert payment.failure_reason == ""
    assert _types_of(payment.order_id) == ["OrderCreated"]


def test_a_payment_the_gateway_captured_is_recorded_completed():
    _, payment = _pending_payment()
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.COMPLETED)
    assert payment_reconcile(now=_later(31)).captured == 1
    assert Payment.objects.get(id=payment.id).status == Payment.Status.COMPLETED
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentCompleted"]


def test_a_payment_the_gateway_declined_fails_with_its_reason():
    _, payment = _pending_payment()
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.FAILED, "insufficient funds")
    assert payment_reconcile(now=_later(31)).failed == 1
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_reason == "insufficient funds"


def test_a_payment_the_gateway_never_saw_fails_and_its_order_is_cancelled():
    # given: the request never reached the gateway (lost between the commit and the call)
    product, payment = _pending_payment(stock=5)
    # when
    assert reconcile.apply().get()["failed"] == 0  # not due yet (the task returns a dict)
    result = payment_reconcile(now=_later(31))
    # then
    assert result.failed == 1
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_reason == "gateway never received the request"
    order_payments_follow_lost()
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CANCELLED
    assert Product.objects.get(id=product.id).stock == 5
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentFailed", "OrderCancelled"]
