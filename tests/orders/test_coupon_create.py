"""Issuing a coupon (the admin's and seed_demo's path): terms the columns cannot hold are a 400
naming the field, and a code created twice at once is a 400 for the second, not an
IntegrityError (a helper's race campaign saw it in 72 of 100 tries of four threads)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from commerce.errors import DomainValidationError
from orders.models import Coupon
from orders.services import coupon_create
from tests.factories import user_make


def _create(code: str, **terms) -> Coupon:
    fields = {"owner": user_make(), "kind": "FIXED", "value": Decimal("5.00"), "expires_at": timezone.now()}
    fields["expires_at"] += timedelta(days=1)
    return coupon_create(code=code, **{**fields, **terms})


@pytest.mark.django_db
@pytest.mark.parametrize(
    "code, terms, field",
    [
        ("BIG", {"value": Decimal("10000000000.00")}, "value"),  # past numeric(12, 2)
        ("TINY", {"value": Decimal("0.001")}, "value"),  # more places than the column keeps
        ("X" * 41, {}, "code"),  # past the column's 40 characters
        ("", {}, "code"),
        ("NUL\x00", {}, "code"),
    ],
)
def test_terms_the_columns_cannot_hold_are_a_400_naming_the_field(code, terms, field):
    with pytest.raises(DomainValidationError) as refused:
        _create(code, **terms)
    assert refused.value.field == field
    assert not Coupon.objects.exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_code_created_twice_at_once_is_a_400_for_the_second():
    if connection.vendor != "postgresql":
        pytest.fail("a race of two sessions: run with DATABASE_URL=postgres://...")
    owner = user_make()
    created = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        # another session creates the code and commits only once the second one waits on it
        try:
            with transaction.atomic():
                _create("TWICE", owner=owner)
                created.set()
                release.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    assert created.wait(10)
    threading.Timer(0.3, release.set).start()  # the second's INSERT waits on the first's row
    try:
        with pytest.raises(DomainValidationError) as refused:
            _create("TWICE", owner=owner)
    finally:
        release.set()
        thread.join(10)
    assert errors == []
    assert refused.value.field == "code"
    assert Coupon.objects.filter(code="TWICE").count() == 1
