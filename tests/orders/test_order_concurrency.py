"""Concurrent orders on PostgreSQL: stock never goes negative, no unit or coupon is sold twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from django.db import connection, connections

from catalog.models import Product
from orders.models import Order
from outbox.models import OutboxEvent
from tests.factories import coupon_make, product_make, token_for, user_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.fail("this guarantee is proven on PostgreSQL: run with DATABASE_URL=postgres://...")


def _post_concurrently(requests: list[tuple[str, dict]], tokens: list[str]) -> list[int]:
    barrier = Barrier(len(requests))

    def post(index: int) -> int:
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[index]}")
        path, body = requests[index]
        barrier.wait()
        try:
            return client.post(path, body, format="json").status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(post, range(len(requests))))


def test_twenty_concurrent_orders_for_five_units_sell_exactly_five():
    # given
    product = product_make(stock=5)
    users = [user_make() for _ in range(20)]
    body = {"lines": [{"product_id": product.id, "quantity": 1}]}
    # when
    statuses = _post_concurrently([("/api/orders/", body)] * 20, [token_for(u) for u in users])
    # then
    assert sorted(statuses) == [201] * 5 + [409] * 15
    product.refresh_from_db()
    assert product.stock == 0
    assert Order.objects.count() == 5
    versions = list(
        OutboxEvent.objects.filter(type="StockChanged", key=str(product.id))
        .order_by("seq")
        .values_list("payload__version", "payload__quantity")
    )
    assert versions == [(1, 5), (2, 4), (3, 3), (4, 2), (5, 1), (6, 0)]


def test_a_single_use_coupon_used_by_concurrent_orders_is_used_once():
    # given
    user = user_make()
    product = product_make(stock=100)
    coupon = coupon_make(owner=user)
    token = token_for(user)
    body = {"lines": [{"product_id": product.id, "quantity": 1}], "coupon_code": coupon.code}
    # when
    statuses = _post_concurrently([("/api/orders/", body)] * 10, [token] * 10)
    # then
    assert sorted(statuses) == [201] + [400] * 9
    assert Order.objects.filter(coupon=coupon).count() == 1
    assert Product.objects.get(id=product.id).stock == 99
