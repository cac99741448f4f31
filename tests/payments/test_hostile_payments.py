"""Money under hostile sequences and input: a payment retried after a failure and both captured,
a failure's stale reaction beside a retry, and callbacks the gateway's secret signed but whose
content is hostile. Each was found by driving the API with such input (a fuzzing session); each
answer was wrong before the fix (a 500, or money captured twice and kept)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from orders.models import Order
from orders.services import OrderLineRequest, order_follow_payment, order_payments_follow_lost, order_place
from outbox.models import OutboxEvent
from payments.gateway import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ChargeState,
    ChargeStatus,
    callback_headers,
    callback_signature,
)
from payments.models import Payment
from payments.selectors import payment_finished_for_pending_orders
from payments.services import payment_complete, payment_fail, payment_reconcile, payment_request
from tests.factories import product_make, user_make
from tests.support.gateways import SilentGateway, signed

pytestmark = pytest.mark.django_db

CALLBACK = "/api/payments/callback/"


@pytest.fixture(autouse=True)
def _silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"


def _order_with_a_failed_payment_and_its_retry() -> tuple[Order, Payment, Payment]:
    user = user_make()
    product = product_make(price="10.00", stock=5)
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=1)])
    first = payment_request(user=user, order_id=order.id, card_type="VISA")
    payment_fail(transaction_key=first.transaction_key, reason="declined")
    retry = payment_request(user=user, order_id=order.id, card_type="VISA")
    return order, first, retry


def test_a_second_capture_for_an_order_already_paid_is_refund_due():
    # given a failed payment, its retry, and then both captured by the gateway (the first one
    # late), before the order's reaction to either has run
    order, first, retry = _order_with_a_failed_payment_and_its_retry()
    payment_complete(transaction_key=first.transaction_key)
    payment_complete(transaction_key=retry.transaction_key)
    # then one capture pays the order and the other is refund-due, with the event that says so
    statuses = dict(Payment.objects.filter(order=order).values_list("id", "status"))
    assert statuses == {first.id: "COMPLETED", retry.id: "REFUND_DUE"}
    assert Payment.objects.get(id=retry.id).refund_reason == "order_already_paid"
    assert OutboxEvent.objects.filter(type="PaymentRefundRequired", aggregateid=str(order.id)).count() == 1


def test_a_failed_payments_stale_reaction_does_not_cancel_an_order_whose_retry_is_open():
    # given a failed payment whose reaction had not run when the customer retried
    order, first, retry = _order_with_a_failed_payment_and_its_retry()
    # when the failure's reaction runs, and the beat's repair of lost reactions
    order_follow_payment(payment_id=first.id)
    assert first.id not in set(payment_finished_for_pending_orders().values_list("id", flat=True))
    order_payments_follow_lost()
    # then the order still awaits the retry's outcome, which can still pay it
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT
    assert payment_complete(transaction_key=retry.transaction_key).status == Payment.Status.COMPLETED


def test_the_retrys_own_failure_cancels_the_order():
    # given a failed payment and its retry, which fails too
    order, first, retry = _order_with_a_failed_payment_and_its_retry()
    order_follow_payment(payment_id=first.id)
    payment_fail(transaction_key=retry.transaction_key, reason="declined again")
    # when the reactions run (the beat's repair included)
    order_follow_payment(payment_id=retry.id)
    order_payments_follow_lost()
    # then the order is cancelled: no payment is left to pay it
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


def test_a_late_capture_of_the_failed_payment_then_the_retrys_failure_leaves_the_order_paid():
    # given a failed payment and its retry; the first one is captured late, then the retry fails
    order, first, retry = _order_with_a_failed_payment_and_its_retry()
    payment_complete(transaction_key=first.transaction_key)
    payment_fail(transaction_key=retry.transaction_key, reason="declined")
    # when every reaction runs, the retry's first
    order_follow_payment(payment_id=retry.id)
    order_follow_payment(payment_id=first.id)
    # then the order is confirmed by the capture, not cancelled by the retry's failure
    order.refresh_from_db()
    assert order.status == Order.Status.CONFIRMED


def _signed_callback(client, body: bytes, **sign):
    return client.post(CALLBACK, body, content_type="application/json", **signed(body, **sign))


@pytest.mark.parametrize(
    "reason, stored",
    [
        ("card\u0000declined", "carddeclined"),
        ("card\ud800declined", "card\ufffddeclined"),
        (5, "declined"),
        (["declined"], "declined"),
    ],
)
def test_a_signed_decline_with_a_hostile_reason_is_recorded_with_the_reason_cleaned(client, reason, stored):
    _, _, retry = _order_with_a_failed_payment_and_its_retry()
    body = json.dumps({"transaction_key": retry.transaction_key, "status": "FAILED", "reason": reason}).encode()
    response = _signed_callback(client, body)
    assert response.status_code == 200, response.content
    failed = Payment.objects.get(id=retry.id)
    assert (failed.status, failed.failure_reason) == (Payment.Status.FAILED, stored)
    event = OutboxEvent.objects.filter(type="PaymentFailed", aggregateid=str(failed.order_id)).latest("seq")
    assert event.payload["reason"] == stored


def test_a_signed_capture_with_a_hostile_reason_is_recorded(client):
    _, _, retry = _order_with_a_failed_payment_and_its_retry()
    body = json.dumps({"transaction_key": retry.transaction_key, "status": "COMPLETED", "reason": {"a": "\u0000"}})
    response = _signed_callback(client, body.encode())
    assert response.status_code == 200, response.content
    assert Payment.objects.get(id=retry.id).status == Payment.Status.COMPLETED


def test_reconciliation_records_a_decline_whose_reason_is_hostile_and_goes_on():
    # given two payments left unanswered; the gateway says the first was declined, with a
    # reason PostgreSQL would refuse, and the second captured
    _, _, declined = _order_with_a_failed_payment_and_its_retry()
    _, _, captured = _order_with_a_failed_payment_and_its_retry()
    SilentGateway.answers[declined.transaction_key] = ChargeStatus(ChargeState.FAILED, reason="no\u0000funds")
    SilentGateway.answers[captured.transaction_key] = ChargeStatus(ChargeState.COMPLETED)
    # when the reconciliation runs
    result = payment_reconcile(now=timezone.now() + timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER + 1))
    # then both are settled
    assert (result.failed, result.captured) == (1, 1)
    assert Payment.objects.get(id=declined.id).failure_reason == "nofunds"
    assert Payment.objects.get(id=captured.id).status == Payment.Status.COMPLETED


def test_a_signed_callback_nested_too_deep_is_a_400(client):
    response = _signed_callback(client, b"[" * 5000)
    assert response.status_code == 400, response.content


@pytest.mark.parametrize("timestamp", ["\u00b2", "9" * 400, "9" * 5000])
def test_a_signed_callback_whose_timestamp_is_not_a_plain_number_is_a_401(client, timestamp):
    # "²" (superscript two) is a digit to str.isdigit(), not to int(); 400 digits overflow the
    # comparison with the float clock; 5,000 are past int()'s limit. Signed with the secret.
    body = json.dumps({"transaction_key": "txn_" + "0" * 24, "status": "FAILED"}).encode()
    headers = callback_headers(body)
    headers[TIMESTAMP_HEADER] = timestamp
    headers[SIGNATURE_HEADER] = callback_signature(body, timestamp=timestamp, event_id=headers[EVENT_ID_HEADER])
    response = client.post(
        CALLBACK,
        body,
        content_type="application/json",
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    )
    assert response.status_code == 401, response.content
