"""Factories for tests. Products and orders are made through the services, so that the events
they record are the real ones."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token

from catalog.models import Product
from catalog.services import product_create
from orders.models import Coupon
from orders.services import coupon_create

_counter = itertools.count(1)


def user_make(*, username: str | None = None, is_staff: bool = False):
    name = username or f"user{next(_counter)}"
    return get_user_model().objects.create_user(username=name, password="pw-for-tests-only", is_staff=is_staff)


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def product_make(*, price: str = "10.00", stock: int = 10, name: str | None = None) -> Product:
    return product_create(name=name or f"Product {next(_counter)}", price=Decimal(price), stock=stock)


def coupon_make(
    *,
    owner,
    kind: str = Coupon.Kind.FIXED,
    value: str = "5.00",
    expires_in: timedelta = timedelta(days=7),
    code: str | None = None,
) -> Coupon:
    return coupon_create(
        code=code or f"C{next(_counter):06d}",
        kind=kind,
        value=Decimal(value),
        owner=owner,
        expires_at=timezone.now() + expires_in,
    )
