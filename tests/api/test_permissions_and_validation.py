"""Who may see what, and how bad input is answered: a 4xx naming the field, never a 500."""

from __future__ import annotations

import pytest

from outbox.models import OutboxEvent
from tests.factories import coupon_make, product_make, token_for, user_make

pytestmark = pytest.mark.django_db


def _client_for(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


@pytest.fixture
def owner_and_stranger(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    owner, stranger = user_make(), user_make()
    product = product_make(stock=10)
    owner_client = _client_for(owner)
    order = owner_client.post(
        "/api/orders/", {"lines": [{"product_id": product.id, "quantity": 1}]}, format="json"
    ).json()
    payment = owner_client.post("/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, format="json").json()
    return owner_client, _client_for(stranger), order, payment


def test_someone_elses_order_and_payment_are_404(owner_and_stranger):
    owner, stranger, order, payment = owner_and_stranger
    assert owner.get(f"/api/orders/{order['id']}/").status_code == 200
    assert stranger.get(f"/api/orders/{order['id']}/").status_code == 404
    assert stranger.post(f"/api/orders/{order['id']}/cancel/", {}, format="json").status_code == 404
    assert owner.get(f"/api/payments/{payment['id']}/").status_code == 200
    assert stranger.get(f"/api/payments/{payment['id']}/").status_code == 404
    assert (
        stranger.post("/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, format="json").status_code
        == 404
    )
    assert stranger.get("/api/orders/").json()["count"] == 0


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/orders/"),
        ("post", "/api/orders/"),
        ("get", "/api/orders/1/"),
        ("post", "/api/payments/"),
        ("get", "/api/payments/1/"),
        ("put", "/api/products/1/like/"),
        ("delete", "/api/products/1/like/"),
        ("get", "/api/backoffice/metrics/"),
    ],
)
def test_anonymous_is_401(api_client, method, path):
    assert getattr(api_client, method)(path).status_code == 401


def test_staff_endpoints_are_403_for_others():
    client = _client_for(user_make())
    assert client.get("/api/backoffice/metrics/").status_code == 403


@pytest.mark.parametrize(
    "body,field",
    [
        ({"lines": []}, "lines"),
        ({"lines": [{"product_id": 1, "quantity": 0}]}, "lines"),
        ({"lines": [{"product_id": 999999, "quantity": 1}]}, "lines"),
        ({"lines": [{"product_id": "x", "quantity": 1}]}, "lines"),
        ({}, "lines"),
        ({"lines": "nope"}, "lines"),
    ],
)
def test_invalid_order_input_is_400_with_the_field(body, field):
    client = _client_for(user_make())
    response = client.post("/api/orders/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_duplicate_product_lines_are_400():
    product = product_make()
    client = _client_for(user_make())
    line = {"product_id": product.id, "quantity": 1}
    response = client.post("/api/orders/", {"lines": [line, line]}, format="json")
    assert response.status_code == 400
    assert "lines" in response.json()


def test_malformed_json_is_400():
    client = _client_for(user_make())
    response = client.post("/api/orders/", "{not json", content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("coupon_case", ["expired", "used", "foreign", "unknown"])
def test_unusable_coupon_is_400_on_coupon_code_and_nothing_is_recorded(coupon_case):
    from datetime import timedelta

    from django.utils import timezone

    user = user_make()
    product = product_make(stock=3)
    if coupon_case == "expired":
        code = coupon_make(owner=user, expires_in=timedelta(seconds=-1)).code
    elif coupon_case == "used":
        coupon = coupon_make(owner=user)
        coupon.used_at = timezone.now()
        coupon.save()
        code = coupon.code
    elif coupon_case == "foreign":
        code = coupon_make(owner=user_make()).code
    else:
        code = "NOSUCHCODE"
    before = OutboxEvent.objects.count()
    response = _client_for(user).post(
        "/api/orders/", {"lines": [{"product_id": product.id, "quantity": 1}], "coupon_code": code}, format="json"
    )
    assert response.status_code == 400
    assert "coupon_code" in response.json()
    assert OutboxEvent.objects.count() == before
    product.refresh_from_db()
    assert product.stock == 3


def test_insufficient_stock_is_409_with_the_available_quantity():
    product = product_make(stock=2)
    response = _client_for(user_make()).post(
        "/api/orders/", {"lines": [{"product_id": product.id, "quantity": 3}]}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["available"] == 2
    assert response.json()["code"] == "insufficient_stock"


def test_paying_twice_is_409(owner_and_stranger):
    owner, _, order, _ = owner_and_stranger
    response = owner.post("/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, format="json")
    assert response.status_code == 409


def test_unknown_card_type_is_400(owner_and_stranger):
    owner, _, order, _ = owner_and_stranger
    response = owner.post("/api/payments/", {"order_id": order["id"], "card_type": "BITCOIN"}, format="json")
    assert response.status_code == 400
    assert "card_type" in response.json()
