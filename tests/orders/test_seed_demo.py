"""seed_demo creates the demo data once, and running it again adds nothing."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from catalog.models import Product
from orders.models import Coupon
from outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db


def _seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_is_idempotent_and_prints_tokens(settings):
    settings.DEBUG = True
    first = _seed()
    counts = (
        Product.objects.count(),
        Coupon.objects.count(),
        get_user_model().objects.count(),
        OutboxEvent.objects.count(),
    )
    second = _seed()
    assert counts == (
        Product.objects.count(),
        Coupon.objects.count(),
        get_user_model().objects.count(),
        OutboxEvent.objects.count(),
    )
    assert counts[0] == 20
    assert counts[1] == 6
    assert counts[3] == 20  # one StockChanged per product
    assert first.count("token ") == 3
    assert second.count("token ") == 3
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert "admin (development only)" in first


def test_seed_demo_makes_no_superuser_without_debug(settings):
    settings.DEBUG = False
    output = _seed()
    assert not get_user_model().objects.filter(is_superuser=True).exists()
    assert "admin" not in output
