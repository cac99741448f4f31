"""Request rates are limited (DRF throttles, THROTTLE_* settings): anonymous per IP, users per
user, the token endpoint per IP and most strictly; over the limit, 429 with Retry-After."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from payments.gateway import callback_body, callback_headers
from tests.factories import product_make, token_for, user_make

pytestmark = pytest.mark.django_db

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) > 0
    assert "throttled" in response.json()["detail"].lower()


def test_anonymous_requests_are_limited_per_client(settings):
    settings.THROTTLE_ANON = "3/min"
    product = product_make()
    anonymous = _client()
    answers = [anonymous.get(f"/api/products/{product.id}/").status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    _assert_throttled(anonymous.get(f"/api/products/{product.id}/"))
    # a signed-in user is counted per user, not per address
    assert _client(user_make()).get("/api/products/").status_code == 200


def test_a_user_is_limited_per_user(settings):
    settings.THROTTLE_USER = "3/min"
    shopper, other = user_make(), user_make()
    client = _client(shopper)
    assert [client.get("/api/orders/").status_code for _ in range(3)] == [200, 200, 200]
    _assert_throttled(client.get("/api/orders/"))
    assert _client(other).get("/api/orders/").status_code == 200


def test_the_token_endpoint_is_limited_whatever_the_credentials(settings):
    settings.THROTTLE_LOGIN = "3/min"
    user_make(username="alice")
    client = _client()
    good = {"username": "alice", "password": "pw-for-tests-only"}
    first = client.post("/api/auth/token/", good, format="json")
    assert first.status_code == 200
    assert first.json()["token"]
    wrong = [
        client.post("/api/auth/token/", {"username": "alice", "password": f"guess{n}"}, format="json").status_code
        for n in range(2)
    ]
    assert wrong == [400, 400]
    # the next attempt is refused even with the right password: guessing stops here
    _assert_throttled(client.post("/api/auth/token/", good, format="json"))


def test_the_gateway_callback_is_not_rate_limited(settings):
    # it is authenticated by its signature; a gateway's callbacks come from a few addresses
    settings.THROTTLE_ANON = "1/min"
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    body = callback_body(transaction_key="txn_" + "0" * 24, status="COMPLETED")
    client = _client()
    answers = [
        client.post(
            "/api/payments/callback/", body, content_type="application/json", headers=callback_headers(body)
        ).status_code
        for _ in range(3)
    ]
    assert answers == [404, 404, 404]


def test_the_default_rates_put_the_token_endpoint_strictest(tmp_path):
    code = (
        "import django;django.setup();from django.conf import settings as s;"
        "print(s.THROTTLE_LOGIN, s.THROTTLE_ANON, s.THROTTLE_USER)"
    )
    env = {
        "PATH": os.environ["PATH"],
        "VAR_DIR": str(tmp_path),
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "commerce.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, text=True, check=False, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    login, anon, user = (int(rate.split("/")[0]) for rate in result.stdout.split())
    assert result.stdout.split()[0].endswith("/min")
    assert login < anon < user


def test_a_forged_x_forwarded_for_does_not_make_a_new_client(settings):
    # By default no proxy is trusted: the header is the client's to write, and a new value
    # per request was a fresh allowance each time (40 password guesses, no 429).
    settings.THROTTLE_LOGIN = "3/min"
    settings.THROTTLE_ANON = "3/min"
    client = _client()
    guesses = [
        client.post(
            "/api/auth/token/",
            {"username": "alice", "password": f"guess-{n}"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{n}",
        ).status_code
        for n in range(4)
    ]
    assert guesses[:3] == [400, 400, 400]
    assert guesses[3] == 429
    product = product_make()
    reads = [
        client.get(f"/api/products/{product.id}/", HTTP_X_FORWARDED_FOR=f"10.0.1.{n}").status_code for n in range(4)
    ]
    assert reads == [200, 200, 200, 429]


def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_saw(settings):
    # TRUSTED_PROXIES=1: the last X-Forwarded-For entry is the proxy's own record of the client.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    settings.THROTTLE_LOGIN = "2/min"
    client = _client()

    def guess(forwarded_for: str) -> int:
        return client.post(
            "/api/auth/token/",
            {"username": "alice", "password": "wrong"},
            format="json",
            HTTP_X_FORWARDED_FOR=forwarded_for,
        ).status_code

    # one client behind the proxy, whatever it puts before the proxy's entry
    assert [guess(f"1.2.3.{n}, 203.0.113.7") for n in range(3)] == [400, 400, 429]
    # another client has its own allowance
    assert guess("203.0.113.8") == 400


def test_the_admin_login_is_limited_per_client_like_the_token_endpoint(client, settings):
    # given a staff account and the login rate at 3 a minute
    settings.THROTTLE_LOGIN = "3/min"
    staff = user_make(username="ops", is_staff=True)
    # when a client guesses passwords on the admin's login form
    guesses = [client.post("/admin/login/", {"username": "ops", "password": f"guess{n}"}).status_code for n in range(3)]
    # then the form answers (200: wrong password) until the limit, and then refuses with 429
    # and Retry-After, even the right password: guessing stops there (before: no limit at all)
    assert guesses == [200, 200, 200]
    refused = client.post("/admin/login/", {"username": "ops", "password": "pw-for-tests-only"})
    assert refused.status_code == 429, refused.content[:300]
    assert int(refused["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    # the form itself still shows, and another client is not affected
    assert client.get("/admin/login/").status_code == 200
    other = type(client)(REMOTE_ADDR="10.0.0.9")
    signed_in = other.post("/admin/login/", {"username": "ops", "password": "pw-for-tests-only"})
    assert signed_in.status_code == 302
    assert other.session["_auth_user_id"] == str(staff.id)
