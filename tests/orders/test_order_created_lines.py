"""OrderCreated's lines are the order's lines as written, without reading them back: placing an
order is the API's hottest write, and every round trip in it is paid at every order."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders.models import OrderLine
from orders.services import OrderLineRequest, order_place
from outbox.models import OutboxEvent
from tests.factories import product_make, user_make


@pytest.mark.django_db
def test_order_created_carries_the_lines_the_database_holds():
    # given: lines requested out of product order, prices with cents
    cheap, dear = product_make(price="0.01", stock=9), product_make(price="19.99", stock=9)
    # when
    order = order_place(
        user=user_make(),
        lines=[OrderLineRequest(product_id=dear.id, quantity=3), OrderLineRequest(product_id=cheap.id, quantity=2)],
    )
    # then: the payload's lines are the stored ones, by product id
    payload = OutboxEvent.objects.get(type="OrderCreated", aggregateid=str(order.id)).payload
    stored = [
        {"product_id": str(line.product_id), "quantity": line.quantity, "unit_price": str(line.unit_price)}
        for line in OrderLine.objects.filter(order=order).order_by("product_id")
    ]
    assert payload["lines"] == stored
    assert [line["product_id"] for line in payload["lines"]] == [str(cheap.id), str(dear.id)]
    assert payload["original_total"] == "59.99"


@pytest.mark.django_db
def test_placing_an_order_does_not_read_its_lines_back():
    # given
    product = product_make(stock=5)
    user = user_make()
    # when
    with CaptureQueriesContext(connection) as queries:
        order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=1)])
    # then: the lines are inserted, and never selected
    line_statements = [q["sql"] for q in queries.captured_queries if "orders_orderline" in q["sql"]]
    assert line_statements
    assert not [sql for sql in line_statements if sql.lstrip().upper().startswith("SELECT")], line_statements
