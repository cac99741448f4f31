"""Stock stays within what every part of the pipeline holds (a 32-bit integer: the column on
PostgreSQL, StockChanged's `quantity`), refused with the field named before anything is written;
and a product's cached detail follows the changes made to it in the admin."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from catalog.models import Product
from catalog.services import STOCK_MAX, product_create, product_restock
from commerce.errors import DomainValidationError
from orders.services import OrderLineRequest, order_cancel, order_place
from outbox.models import OutboxEvent
from tests.factories import product_make, user_make

pytestmark = pytest.mark.django_db


def test_stock_max_is_what_stock_changed_and_the_column_hold():
    assert STOCK_MAX == 2**31 - 1


@pytest.mark.parametrize("stock", [-1, STOCK_MAX + 1, 9223372036854775807])
def test_a_product_created_with_stock_out_of_range_is_refused(stock):
    with pytest.raises(DomainValidationError) as refused:
        product_create(name="Huge", price=Decimal("1.00"), stock=stock)
    assert refused.value.field == "stock"
    assert not Product.objects.filter(name="Huge").exists()
    assert not OutboxEvent.objects.filter(type="StockChanged").exists()


def test_a_restock_past_the_maximum_is_refused_and_changes_nothing():
    product = product_make(stock=STOCK_MAX - 5)
    recorded = OutboxEvent.objects.count()
    with pytest.raises(DomainValidationError) as refused:
        product_restock(product_id=product.id, quantity=10)
    assert refused.value.field == "quantity"
    product.refresh_from_db()
    assert product.stock == STOCK_MAX - 5
    assert OutboxEvent.objects.count() == recorded
    # up to the maximum is fine
    assert product_restock(product_id=product.id, quantity=5).stock == STOCK_MAX


def test_the_admin_refuses_an_initial_stock_out_of_range_in_its_form(admin_client):
    answer = admin_client.post(
        reverse("admin:catalog_product_add"), {"name": "Huge", "price": "1.00", "stock": "9223372036854775807"}
    )
    assert answer.status_code == 200  # the form again, with its error
    assert "stock" in answer.context["adminform"].form.errors
    assert not Product.objects.filter(name="Huge").exists()


def test_the_admin_restock_action_reports_a_refusal_instead_of_failing(admin_client):
    full = product_make(stock=STOCK_MAX)
    other = product_make(stock=3)
    answer = admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {"action": "restock_ten", "_selected_action": [full.id, other.id]},
        follow=True,
    )
    assert answer.status_code == 200
    shown = [str(message) for message in answer.context["messages"]]
    assert any(str(full.id) in message and "refused" in message for message in shown), shown
    other.refresh_from_db()
    full.refresh_from_db()
    assert (other.stock, full.stock) == (13, STOCK_MAX)


def test_a_price_changed_in_the_admin_is_shown_by_the_cached_detail_at_once(
    admin_client, api_client, django_capture_on_commit_callbacks
):
    product = product_make(price="39.00")
    assert api_client.get(f"/api/products/{product.id}/").json()["price"] == "39.00"  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(
            reverse("admin:catalog_product_change", args=[product.id]), {"name": product.name, "price": "41.00"}
        )
    assert answer.status_code == 302, answer.content
    assert api_client.get(f"/api/products/{product.id}/").json()["price"] == "41.00"


def test_a_restock_is_shown_by_the_cached_detail_at_once(api_client, django_capture_on_commit_callbacks):
    product = product_make(stock=0)
    assert api_client.get(f"/api/products/{product.id}/").json()["stock"] == 0  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        product_restock(product_id=product.id, quantity=10)
    assert api_client.get(f"/api/products/{product.id}/").json()["stock"] == 10


def test_the_admin_does_not_delete_products(admin_client):
    # No event says a product is gone: its metrics in the back office stayed for good.
    product = product_make(stock=7)
    page = admin_client.get(reverse("admin:catalog_product_delete", args=[product.id]))
    assert page.status_code == 403
    admin_client.post(reverse("admin:catalog_product_delete", args=[product.id]), {"post": "yes"})
    bulk = admin_client.get(reverse("admin:catalog_product_changelist"))
    assert "delete_selected" not in bulk.context["action_form"].fields["action"].choices.__repr__()
    assert Product.objects.filter(id=product.id).exists()


def test_units_given_back_by_a_cancelled_order_are_shown_by_the_cached_detail_at_once(
    api_client, django_capture_on_commit_callbacks, settings
):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    product = product_make(stock=1)
    order = order_place(user=user_make(), lines=[OrderLineRequest(product_id=product.id, quantity=1)])
    assert api_client.get(f"/api/products/{product.id}/").json()["stock"] == 0  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        order_cancel(order_id=order.id, reason="changed my mind")
    assert api_client.get(f"/api/products/{product.id}/").json()["stock"] == 1
