from __future__ import annotations

import pytest
from django.db import transaction

from catalog.models import Like, ProductView
from catalog.services import product_like, product_unlike, product_view_record
from outbox.models import OutboxEvent
from tests.factories import product_make, token_for, user_make

pytestmark = pytest.mark.django_db


def test_liking_twice_is_one_like_and_one_event():
    user, product = user_make(), product_make()
    assert product_like(user=user, product_id=product.id) is True
    assert product_like(user=user, product_id=product.id) is False
    assert Like.objects.filter(product=product).count() == 1
    events = OutboxEvent.objects.filter(type="LikeChanged")
    assert [e.payload["liked"] for e in events] == [True]
    assert events[0].payload["user_id"] == str(user.id)
    assert events[0].key == str(product.id)


def test_unliking_what_is_not_liked_changes_nothing():
    user, product = user_make(), product_make()
    assert product_unlike(user=user, product_id=product.id) is False
    assert not OutboxEvent.objects.filter(type="LikeChanged").exists()
    product_like(user=user, product_id=product.id)
    assert product_unlike(user=user, product_id=product.id) is True
    assert [e.payload["liked"] for e in OutboxEvent.objects.filter(type="LikeChanged")] == [True, False]


def test_like_api_put_and_delete(api_client):
    user, product = user_make(), product_make()
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    assert api_client.put(f"/api/products/{product.id}/like/").json() == {
        "product_id": product.id,
        "liked": True,
        "changed": True,
    }
    assert api_client.put(f"/api/products/{product.id}/like/").json()["changed"] is False
    assert api_client.delete(f"/api/products/{product.id}/like/").json()["changed"] is True
    assert api_client.put("/api/products/999999/like/").status_code == 404


def test_product_detail_records_a_view_even_when_cached(api_client):
    product = product_make(price="3.00", stock=7)
    first = api_client.get(f"/api/products/{product.id}/")
    second = api_client.get(f"/api/products/{product.id}/")
    assert first.status_code == 200
    assert first.json()["stock"] == 7
    assert first.json()["price"] == "3.00"
    assert second.json() == first.json()
    assert ProductView.objects.filter(product=product).count() == 2
    viewed = OutboxEvent.objects.filter(type="ProductViewed")
    assert viewed.count() == 2
    assert viewed[0].payload["user_id"] is None
    assert api_client.get("/api/products/999999/").status_code == 404


def test_product_list_filters_by_name(api_client):
    product_make(name="Blue kettle")
    product_make(name="Red kettle")
    product_make(name="Teapot")
    response = api_client.get("/api/products/", {"name": "KETTLE"})
    assert response.status_code == 200
    assert sorted(p["name"] for p in response.json()["results"]) == ["Blue kettle", "Red kettle"]


def _like_in_a_transaction_that_fails(*, user, product_id: int, before: int) -> None:
    with transaction.atomic():
        product_like(user=user, product_id=product_id)
        assert OutboxEvent.objects.count() == before + 1  # recorded inside the transaction
        raise RuntimeError("the caller's transaction fails after the signal")


def test_a_rolled_back_service_call_leaves_no_outbox_row():
    # given a product; when a like's transaction fails after its signal was sent
    user, product = user_make(), product_make()
    before = OutboxEvent.objects.count()
    with pytest.raises(RuntimeError, match="fails after the signal"):
        _like_in_a_transaction_that_fails(user=user, product_id=product.id, before=before)
    # then neither the like nor its event exist
    assert OutboxEvent.objects.count() == before
    assert not Like.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused():
    from catalog.events import LikeChanged
    from outbox.recording import OutboxOutsideTransaction, outbox_record

    with pytest.raises(OutboxOutsideTransaction):
        outbox_record(event=LikeChanged(product_id="1", user_id="1", liked=True))


def test_view_record_for_anonymous_has_no_user():
    product = product_make()
    view = product_view_record(user=None, product_id=product.id)
    assert view.user is None
