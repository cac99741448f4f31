"""Admin actions declare the permission they need: a staff user who may only view is offered
none and is refused each one (posting the action changes nothing), in the admin and through the
staff API; a user with the permission is offered it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from backoffice.models import DeadLetter
from catalog.models import Product
from orders.models import Order
from orders.services import OrderLineRequest, order_place
from outbox.models import OutboxEvent
from tests.factories import product_make, token_for, user_make

pytestmark = pytest.mark.django_db

VIEW_ONLY = ["view_order", "view_product", "view_outboxevent", "view_deadletter"]


def _staff(client, codenames: list[str]):
    user = user_make(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


@pytest.fixture
def rows(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    product = product_make(stock=10)
    order = order_place(user=user_make(), lines=[OrderLineRequest(product_id=product.id, quantity=1)])
    dead = OutboxEvent.objects.order_by("seq").first()
    assert dead is not None
    OutboxEvent.objects.filter(seq=dead.seq).update(status=OutboxEvent.Status.DEAD)
    letter = DeadLetter.objects.create(
        consumer_group="g", topic="order-events", partition=0, offset=1, value=b"{}", headers=[], error="bad"
    )
    return {"order": order, "product": product, "dead": dead, "letter": letter}


ACTIONS = [
    ("admin:orders_order_changelist", "cancel_orders", "order"),
    ("admin:catalog_product_changelist", "restock_ten", "product"),
    ("admin:outbox_outboxevent_changelist", "requeue_dead", "dead"),
    ("admin:backoffice_deadletter_changelist", "redrive", "letter"),
]


def _state(rows: dict) -> tuple:
    return (
        Order.objects.get(id=rows["order"].id).status,
        Product.objects.get(id=rows["product"].id).stock,
        OutboxEvent.objects.get(seq=rows["dead"].seq).status,
        DeadLetter.objects.get(id=rows["letter"].id).status,
    )


def _offered(page) -> set[str]:
    form = page.context.get("action_form") if page.context else None
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


@pytest.mark.parametrize("url,action,row", ACTIONS)
def test_a_view_only_staff_user_is_offered_no_action_and_refused_each(client, rows, url, action, row):
    # given
    _staff(client, VIEW_ONLY)
    before = _state(rows)
    # when
    page = client.get(reverse(url))
    posted = client.post(reverse(url), {"action": action, "_selected_action": [rows[row].pk]})
    # then: the list is visible, the action neither offered nor run
    assert page.status_code == 200
    assert action not in _offered(page)
    assert posted.status_code in (200, 302)
    assert _state(rows) == before


@pytest.mark.parametrize(
    "url,action,row,codename",
    [
        (*ACTIONS[0], "change_order"),
        (*ACTIONS[1], "change_product"),
        (*ACTIONS[2], "outbox_requeue"),
        (*ACTIONS[3], "deadletter_redrive"),
    ],
)
def test_the_permission_each_action_declares_grants_it(client, rows, url, action, row, codename):
    _staff(client, [*VIEW_ONLY, codename])
    assert action in _offered(client.get(reverse(url)))


def test_change_on_the_rows_does_not_grant_requeue_or_redrive(client, rows):
    # requeue and redrive are operations, not edits: "change" is not enough
    _staff(client, [*VIEW_ONLY, "change_outboxevent", "change_deadletter"])
    assert "requeue_dead" not in _offered(client.get(reverse("admin:outbox_outboxevent_changelist")))
    assert "redrive" not in _offered(client.get(reverse("admin:backoffice_deadletter_changelist")))


def test_a_view_only_staff_user_can_change_nothing_through_the_staff_api(api_client, rows):
    # given
    staff = user_make(is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=VIEW_ONLY))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(staff)}")
    before = _state(rows)
    # when: every write the API has, on someone else's order, and on the staff endpoints
    order_id = rows["order"].id
    answers = [
        api_client.post(f"/api/orders/{order_id}/cancel/", {}, format="json").status_code,
        api_client.post("/api/payments/", {"order_id": order_id, "card_type": "VISA"}, format="json").status_code,
    ] + [
        getattr(api_client, method)(f"/api/backoffice/{path}/").status_code
        for path in ("metrics", "ledger", "events", "deadletters")
        for method in ("post", "put", "patch", "delete")
    ]
    # then: refused (someone else's order is not found; the staff API only reads)
    assert answers[:2] == [404, 404]
    assert set(answers[2:]) == {405}
    assert _state(rows) == before
