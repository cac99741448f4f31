"""Full flows through the HTTP API, with the outbox rows each one records."""

from __future__ import annotations

import pytest

from catalog.models import Product
from orders.models import Coupon, Order
from outbox.models import OutboxEvent
from payments.gateway import callback_body
from payments.models import Payment
from tests.factories import coupon_make, product_make, token_for, user_make
from tests.support.gateways import signed

pytestmark = pytest.mark.django_db


def _types_since(seq: int) -> list[str]:
    return list(OutboxEvent.objects.filter(seq__gt=seq).order_by("seq").values_list("type", flat=True))


def _last_seq() -> int:
    last = OutboxEvent.objects.order_by("-seq").first()
    return last.seq if last else 0


@pytest.fixture
def shopper(api_client):
    user = user_make()
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return user


@pytest.fixture
def silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"


def _place(api_client, product: Product, quantity: int = 2, coupon: str | None = None) -> dict:
    body: dict[str, object] = {"lines": [{"product_id": product.id, "quantity": quantity}]}
    if coupon:
        body["coupon_code"] = coupon
    response = api_client.post("/api/orders/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_order_pay_success_confirms_the_order_and_records_each_event_once(
    api_client, shopper, settings, celery_eager, django_capture_on_commit_callbacks
):
    # given
    settings.PAYMENT_SIM_FAILURE_RATE = 0.0
    product = product_make(price="12.50", stock=5)
    coupon = coupon_make(owner=shopper, value="5.00")
    start = _last_seq()
    # when
    order = _place(api_client, product, quantity=2, coupon=coupon.code)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, format="json")
    # then
    assert response.status_code == 201, response.content
    assert order["original_total"] == "25.00"
    assert order["discount"] == "5.00"
    assert order["final_total"] == "20.00"
    assert Order.objects.get(id=order["id"]).status == Order.Status.CONFIRMED
    assert Payment.objects.get(order_id=order["id"]).status == Payment.Status.COMPLETED
    assert _types_since(start) == ["StockChanged", "OrderCreated", "PaymentCompleted", "OrderConfirmed"]
    created = OutboxEvent.objects.get(type="OrderCreated", aggregateid=str(order["id"]))
    assert created.payload["lines"] == [{"product_id": str(product.id), "quantity": 2, "unit_price": "12.50"}]
    assert created.payload["coupon_code"] == coupon.code
    assert created.payload["user_id"] == str(shopper.id)
    assert created.topic == settings.KAFKA_TOPICS["order-events"]
    assert created.key == str(order["id"])
    completed = OutboxEvent.objects.get(type="PaymentCompleted")
    assert completed.payload["amount"] == "20.00"
    assert completed.payload["card_type"] == "VISA"
    stock = OutboxEvent.objects.filter(type="StockChanged", aggregateid=str(product.id)).last()
    assert stock is not None
    assert stock.payload["quantity"] == 3
    assert stock.payload["version"] == 2
    assert stock.payload["reason"] == "reserve"
    assert stock.payload["order_id"] == str(order["id"])


def test_failed_payment_cancels_the_order_and_restores_stock_and_coupon(
    api_client, shopper, settings, celery_eager, django_capture_on_commit_callbacks
):
    # given
    settings.PAYMENT_SIM_FAILURE_RATE = 1.0
    product = product_make(stock=5)
    coupon = coupon_make(owner=shopper, kind=Coupon.Kind.PERCENT, value="10")
    order = _place(api_client, product, quantity=3, coupon=coupon.code)
    start = _last_seq()
    # when
    with django_capture_on_commit_callbacks(execute=True):
        api_client.post("/api/payments/", {"order_id": order["id"], "card_type": "AMEX"}, format="json")
    # then
    placed = Order.objects.get(id=order["id"])
    assert placed.status == Order.Status.CANCELLED
    assert Product.objects.get(id=product.id).stock == 5
    coupon.refresh_from_db()
    assert coupon.used_at is None
    assert coupon.used_by_order is None
    assert _types_since(start) == ["PaymentFailed", "StockChanged", "OrderCancelled"]
    cancelled = OutboxEvent.objects.get(type="OrderCancelled")
    assert cancelled.payload["was_confirmed"] is False
    assert cancelled.payload["reason"].startswith("payment failed")
    failed = OutboxEvent.objects.get(type="PaymentFailed")
    assert failed.payload["reason"] == "card declined"
    # and the coupon can be used again
    _place(api_client, product, quantity=1, coupon=coupon.code)


def test_duplicate_callback_is_acknowledged_and_changes_nothing(
    api_client, shopper, silent_gateway, celery_eager, django_capture_on_commit_callbacks
):
    product = product_make(stock=5)
    order = _place(api_client, product)
    with django_capture_on_commit_callbacks(execute=True):
        payment = api_client.post(
            "/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, format="json"
        ).json()
    body = callback_body(transaction_key=payment["transaction_key"], status="COMPLETED")
    with django_capture_on_commit_callbacks(execute=True):
        first = api_client.post("/api/payments/callback/", body, content_type="application/json", **signed(body))
    after_first = _last_seq()
    # the gateway sends the same outcome again as a new callback (a new event id)
    with django_capture_on_commit_callbacks(execute=True):
        second = api_client.post("/api/payments/callback/", body, content_type="application/json", **signed(body))
    assert first.status_code == 200
    assert first.json()["changed"] is True
    assert second.status_code == 200
    assert second.json()["changed"] is False
    assert _last_seq() == after_first
    assert Order.objects.get(id=order["id"]).status == Order.Status.CONFIRMED
    # a contradicting callback is a conflict that names the current state
    failed_body = callback_body(transaction_key=payment["transaction_key"], status="FAILED", reason="x")
    conflict = api_client.post(
        "/api/payments/callback/", failed_body, content_type="application/json", **signed(failed_body)
    )
    assert conflict.status_code == 409
    assert conflict.json()["status"] == "COMPLETED"


@pytest.mark.parametrize("signature", [None, "", "00" * 32, "not-hex"])
def test_callback_with_a_bad_signature_is_401_and_changes_nothing(api_client, shopper, silent_gateway, signature):
    product = product_make(stock=5)
    order = _place(api_client, product)
    payment = api_client.post("/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, format="json").json()
    start = _last_seq()
    body = callback_body(transaction_key=payment["transaction_key"], status="COMPLETED")
    headers = signed(body)
    del headers["HTTP_X_SIGNATURE"]
    if signature is not None:
        headers["HTTP_X_SIGNATURE"] = signature
    response = api_client.post("/api/payments/callback/", body, content_type="application/json", **headers)
    assert response.status_code == 401
    assert Payment.objects.get(id=payment["id"]).status == Payment.Status.PENDING
    assert _last_seq() == start


def test_signed_callback_for_an_unknown_payment_is_404(api_client):
    body = callback_body(transaction_key="txn_" + "0" * 24, status="COMPLETED")
    response = api_client.post("/api/payments/callback/", body, content_type="application/json", **signed(body))
    assert response.status_code == 404


def test_user_cancels_a_confirmed_order_and_its_sales_are_reversed(
    api_client, shopper, settings, celery_eager, django_capture_on_commit_callbacks
):
    settings.PAYMENT_SIM_FAILURE_RATE = 0.0
    product = product_make(stock=4)
    order = _place(api_client, product, quantity=4)
    with django_capture_on_commit_callbacks(execute=True):
        api_client.post("/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, format="json")
    response = api_client.post(f"/api/orders/{order['id']}/cancel/", {"reason": "changed my mind"}, format="json")
    again = api_client.post(f"/api/orders/{order['id']}/cancel/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert again.status_code == 409
    assert again.json()["status"] == "CANCELLED"
    assert Product.objects.get(id=product.id).stock == 4
    cancelled = OutboxEvent.objects.get(type="OrderCancelled")
    assert cancelled.payload["was_confirmed"] is True
    assert OutboxEvent.objects.filter(type="OrderCancelled").count() == 1
