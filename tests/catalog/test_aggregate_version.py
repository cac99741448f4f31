"""Every ordered event of a product (LikeChanged, StockChanged) carries the product's next
`aggregate_version`, taken under its row lock; ProductViewed carries none (views commute)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from django.db import connection, connections

from catalog.models import Product
from catalog.services import product_like, product_restock, product_unlike, product_view_record
from orders.services import OrderLineRequest, order_cancel, order_place
from outbox.models import OutboxEvent
from tests.factories import product_make, user_make


def _versions(product_id: int) -> list[tuple[str, int | None]]:
    return list(
        OutboxEvent.objects.filter(aggregatetype="product", aggregateid=str(product_id))
        .order_by("seq")
        .values_list("type", "aggregate_version")
    )


@pytest.mark.django_db
def test_a_products_events_carry_consecutive_versions_and_views_none():
    # given
    user = user_make()
    product = product_make(stock=5)
    # when
    product_like(user=user, product_id=product.id)
    product_like(user=user, product_id=product.id)  # no change, no event, no version
    product_view_record(user=user, product_id=product.id)
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=2)])
    order_cancel(order_id=order.id, reason="x")
    product_unlike(user=user, product_id=product.id)
    product_restock(product_id=product.id, quantity=3)
    # then
    assert _versions(product.id) == [
        ("StockChanged", 1),
        ("LikeChanged", 2),
        ("ProductViewed", None),
        ("StockChanged", 3),
        ("StockChanged", 4),
        ("LikeChanged", 5),
        ("StockChanged", 6),
    ]
    assert Product.objects.get(id=product.id).version == 6


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_likes_of_one_product_get_distinct_increasing_versions():
    if connection.vendor != "postgresql":
        pytest.fail("this guarantee is proven on PostgreSQL: run with DATABASE_URL=postgres://...")
    product = product_make(stock=1)
    users = [user_make() for _ in range(16)]
    barrier = Barrier(len(users))

    def like(user) -> None:
        barrier.wait()
        try:
            product_like(user=user, product_id=product.id)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(like, users))
    versions = [version for _, version in _versions(product.id)]
    assert versions == list(range(1, 18))  # StockChanged (create) then 16 likes, in seq order
