"""Money under hostile sequences and input: a payment retried after a failure and both captured,
a failure's stale reaction beside a retry, and callbacks the gateway's secret signed but whose
content is hostile. Each was found by driving the API with such input (a fuzzing session); each
answer was wrong before the fix (a 500, or money captured twice and kept)."""

from __future__ import annotations

import json

import pytest

from orders.models import Order
from orders.services import OrderLineRequest, order_follow_payment, order_payments_follow_lost, order_place
from outbox.models import OutboxEvent
from payments.gateway import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    callback_headers,
    callback_signature,
)
from payments.models import Payment
from payments.services import payment_complete, payment_fail, payment_request
from tests.factories import product_make, user_make
from tests.support.gateways import signed

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


def test_a_second_capture_for_an_order_already_paid_is_refund_due(django_capture_on_commit_callbacks):
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
    order_payments_follow_lost()
    # then the order still awaits the retry's outcome, which can still pay it
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT
    assert payment_complete(transaction_key=retry.transaction_key).status == Payment.Status.COMPLETED


def _signed_callback(client, body: bytes, **sign):
    return client.post(CALLBACK, body, content_type="application/json", **signed(body, **sign))


@pytest.mark.parametrize("reason", ["card\u0000declined", "card\ud800declined", 5, ["declined"]])
def test_a_signed_callbacks_reason_that_is_not_text_is_a_400_naming_it(client, reason):
    _, _, retry = _order_with_a_failed_payment_and_its_retry()
    body = json.dumps({"transaction_key": retry.transaction_key, "status": "FAILED", "reason": reason}).encode()
    response = _signed_callback(client, body)
    assert response.status_code == 400, response.content
    assert "reason" in response.json()
    assert Payment.objects.get(id=retry.id).status == Payment.Status.PENDING


def test_a_signed_callback_nested_too_deep_is_a_400(client):
    response = _signed_callback(client, b"[" * 5000)
    assert response.status_code == 400, response.content


def test_a_signed_callback_whose_timestamp_is_digits_but_not_ascii_is_a_401(client):
    # "²" (superscript two) is a digit to str.isdigit(), not to int(); signed with the secret
    body = json.dumps({"transaction_key": "txn_" + "0" * 24, "status": "FAILED"}).encode()
    headers = callback_headers(body)
    headers[TIMESTAMP_HEADER] = "\u00b2"
    headers[SIGNATURE_HEADER] = callback_signature(body, timestamp="\u00b2", event_id=headers[EVENT_ID_HEADER])
    response = client.post(
        CALLBACK,
        body,
        content_type="application/json",
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    )
    assert response.status_code == 401, response.content
