"""Requests a fuzzing session found answered 500: JSON nested past Python's recursion limit, an
order whose total does not fit its column (on SQLite it was even committed, and every later read
of the user's orders failed), and a declared Content-Length too large to read. Each is now a 400
naming the field (a 413 for the length), and nothing is written."""

from __future__ import annotations

import io
from typing import Any

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


def _post_declaring(client: APIClient, path: str, body: bytes, declared: str):
    """A POST whose Content-Length says `declared`, the body read from a buffered reader as a
    server's socket is (the test client's own payload refuses a read past its end instead)."""
    extra: dict[str, Any] = {"CONTENT_LENGTH": declared, "wsgi.input": io.BufferedReader(io.BytesIO(body))}
    return client.post(path, body, content_type="application/json", **extra)


@pytest.mark.parametrize("declared", ["99999999999999999999", "9223372036854775807", "2621441"])
@pytest.mark.parametrize("path", ["/api/auth/token/", "/api/orders/", "/api/payments/"])
def test_a_declared_length_over_the_upload_limit_is_a_json_413(path, declared, settings):
    # DRF asked the stream for that many bytes: an OverflowError, a 500.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # Django's default, whatever the settings say
    response = _post_declaring(_client_for(user_make()), path, b"{}", declared)
    assert response.status_code == 413, response.content
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()
    assert not Order.objects.exists()


@pytest.mark.parametrize("path", ["/api/auth/token/", "/api/orders/"])
def test_a_negative_declared_length_is_a_400(path):
    response = _post_declaring(_client_for(user_make()), path, b"{}", "-1")
    assert response.status_code == 400, response.content
    assert "Content-Length" in response.json()["detail"]


def test_a_declared_length_that_is_not_a_number_is_read_as_no_body():
    # Django and DRF read it as 0: no body to parse, and the missing fields are a 400.
    response = _post_declaring(APIClient(), "/api/auth/token/", b"{}", "abc")
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"username", "password"}


def test_a_body_at_the_upload_limit_is_parsed(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64
    body = b'{"username": "nobody", "password": "x"}'.ljust(64)
    response = APIClient().post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "non_field_errors" in response.json()
    assert APIClient().post("/api/auth/token/", body + b" ", content_type="application/json").status_code == 413


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
