"""Requests a fuzzing session found answered 500: JSON nested past Python's recursion limit, and
an order whose total does not fit its column (on SQLite it was even committed, and every later
read of the user's orders failed). Each is now a 400 naming the field, and nothing is written."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from catalog.models import Product
from orders.models import Order
from outbox.models import OutboxEvent
from tests.factories import product_make, token_for, user_make

pytestmark = pytest.mark.django_db

NESTED_TOO_DEEP = b"[" * 5000


def _client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


@pytest.mark.parametrize("path", ["/api/auth/token/", "/api/orders/", "/api/payments/"])
def test_json_nested_too_deep_is_a_400(path, settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    response = _client_for(user_make()).post(path, NESTED_TOO_DEEP, content_type="application/json")
    assert response.status_code == 400, response.content


@pytest.mark.parametrize("price, quantity", [("2000000.00", 5000), ("9999999999.99", 2)])
def test_an_order_whose_total_does_not_fit_is_a_400_and_nothing_is_written(price, quantity):
    user = user_make()
    product = product_make(price=price, stock=100_000)
    client = _client_for(user)
    response = client.post("/api/orders/", {"lines": [{"product_id": product.id, "quantity": quantity}]}, format="json")
    assert response.status_code == 400, response.content
    assert "lines" in response.json()
    assert not Order.objects.exists()
    assert Product.objects.get(id=product.id).stock == 100_000
    assert not OutboxEvent.objects.filter(type="OrderCreated").exists()
    assert client.get("/api/orders/").status_code == 200


@pytest.mark.parametrize("path", ["/api/orders/abc/", "/api/products/-1/", "/api/no-such-thing/", "/api"])
def test_a_path_no_url_matches_is_a_json_404_under_the_api(path, settings):
    settings.DEBUG = False  # DEBUG's technical 404 page is HTML whatever the handler
    response = _client_for(user_make()).get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"
