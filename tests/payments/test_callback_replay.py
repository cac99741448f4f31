"""A captured callback cannot be replayed, a stale one is refused, and a big body is refused
before it is read."""

from __future__ import annotations

import io
import time

import pytest

from orders.services import OrderLineRequest, order_place
from outbox.models import OutboxEvent
from payments.api.views import RawBodyParser, RequestTooLarge
from payments.gateway import callback_body
from payments.models import CallbackReceipt, Payment
from payments.services import payment_request
from tests.factories import product_make, user_make
from tests.support.gateways import signed

pytestmark = pytest.mark.django_db

CALLBACK = "/api/payments/callback/"


@pytest.fixture
def payment(settings) -> Payment:
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    user = user_make()
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product_make().id, quantity=1)])
    return payment_request(user=user, order_id=order.id, card_type="VISA")


def _post(client, body: bytes, headers: dict[str, str]):
    return client.post(CALLBACK, body, content_type="application/json", **headers)


def _unchanged(payment: Payment, rows: int) -> bool:
    return Payment.objects.get(id=payment.id).status == Payment.Status.PENDING and OutboxEvent.objects.count() == rows


@pytest.mark.parametrize("age_s", [301, -301, 86400])
def test_a_callback_outside_the_tolerance_window_is_401_and_changes_nothing(client, payment, age_s):
    body = callback_body(transaction_key=payment.transaction_key, status="COMPLETED")
    rows = OutboxEvent.objects.count()
    response = _post(client, body, signed(body, timestamp=int(time.time()) - age_s))
    assert response.status_code == 401
    assert "tolerance" in response.json()["detail"]
    assert _unchanged(payment, rows)
    assert not CallbackReceipt.objects.exists()


def test_the_tolerance_window_is_a_setting(client, payment, settings):
    settings.PAYMENT_CALLBACK_TOLERANCE = 3600
    body = callback_body(transaction_key=payment.transaction_key, status="COMPLETED")
    response = _post(client, body, signed(body, timestamp=int(time.time()) - 1800))
    assert response.status_code == 200


def test_a_replayed_callback_is_409_and_changes_nothing(client, payment):
    # given: a valid declined callback was applied... and captured by someone on the way
    body = callback_body(transaction_key=payment.transaction_key, status="FAILED", reason="declined")
    headers = signed(body)
    assert _post(client, body, headers).status_code == 200
    rows = OutboxEvent.objects.count()
    # when: it is replayed within the window
    replay = _post(client, body, headers)
    # then
    assert replay.status_code == 409
    assert replay.json()["code"] == "replayed"
    assert OutboxEvent.objects.count() == rows
    assert CallbackReceipt.objects.count() == 1


def test_the_timestamp_and_the_event_id_are_signed(client, payment):
    body = callback_body(transaction_key=payment.transaction_key, status="COMPLETED")
    rows = OutboxEvent.objects.count()
    headers = signed(body)
    refreshed = dict(headers, HTTP_X_GATEWAY_TIMESTAMP=str(int(time.time()) + 1))
    renamed = dict(headers, HTTP_X_GATEWAY_EVENT_ID="evt_other")
    missing = {key: value for key, value in headers.items() if key != "HTTP_X_GATEWAY_EVENT_ID"}
    for tampered in (refreshed, renamed, missing):
        assert _post(client, body, tampered).status_code == 401
    assert _unchanged(payment, rows)


def test_a_refused_callback_leaves_no_receipt_so_a_good_one_with_its_id_still_applies(client, payment):
    # a 404 (unknown payment) rolls its receipt back with everything else
    unknown = callback_body(transaction_key="txn_" + "0" * 24, status="COMPLETED")
    assert _post(client, unknown, signed(unknown, event_id="evt_1")).status_code == 404
    body = callback_body(transaction_key=payment.transaction_key, status="COMPLETED")
    assert _post(client, body, signed(body, event_id="evt_1")).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(client, payment, settings):
    # given: a request that declares more than PAYMENT_CALLBACK_MAX_BYTES (64 KiB by default)
    assert settings.PAYMENT_CALLBACK_MAX_BYTES == 64 * 1024
    small = callback_body(transaction_key=payment.transaction_key, status="COMPLETED")
    rows = OutboxEvent.objects.count()
    # when: the declared length is over the limit though the bytes sent are a valid callback
    response = _post(client, small, dict(signed(small), CONTENT_LENGTH=str(64 * 1024 + 1)))
    # then: refused on the declared length alone, so the body was never read
    assert response.status_code == 413
    assert _unchanged(payment, rows)
    big = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    assert _post(client, big, signed(big)).status_code == 413


def test_a_body_without_a_declared_length_is_read_no_further_than_the_limit(settings):
    settings.PAYMENT_CALLBACK_MAX_BYTES = 10
    stream = io.BytesIO(b"y" * 1000)
    with pytest.raises(RequestTooLarge):
        RawBodyParser().parse(stream)
    assert stream.tell() == 11
    assert RawBodyParser().parse(io.BytesIO(b"0123456789")) == b"0123456789"
