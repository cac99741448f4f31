"""Schemathesis against /api/schema/: generated requests, authenticated, never a 5xx and never a
response the schema does not describe."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.factories import coupon_make, product_make, token_for, user_make

pytestmark = pytest.mark.django_db

# The fixture's token for the test (schemathesis builds the test's arguments from the schema).
_AUTH: dict[str, str] = {}


@pytest.fixture
def api_schema(settings):
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from commerce.wsgi import application

    # As Django's test client does: a request must not close the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)

    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    settings.ALLOWED_HOSTS = ["*"]
    user = user_make(is_staff=True)
    for _ in range(3):
        product_make(stock=1000)
    coupon_make(owner=user)
    _AUTH["token"] = token_for(user)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_answers_within_its_schema_and_never_5xx(case):
    case.call_and_validate(headers={"Authorization": f"Token {_AUTH['token']}"})
