"""An id in an admin list's query string that no integer column can hold (`?order=` followed by
23 nines) was a 500 on SQLite ("Python int too large to convert to SQLite INTEGER"): Django
guards a plain integer field's exact and comparison lookups, not a foreign key's nor `__in`. A
year no date can have (`?created_at__year=` and as many nines) was a 500 while the SQL was built.
The project's admins answer it as any other invalid lookup: a redirect to the list with `?e=1`."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from orders.services import OrderLineRequest, order_place
from payments.models import Payment
from tests.factories import product_make, user_make

pytestmark = pytest.mark.django_db

TOO_BIG = "9" * 23
INT64_MAX = str(2**63 - 1)

LOOKUPS = [
    ("payments", "payment", f"order={TOO_BIG}"),
    ("payments", "refundduepayment", f"order={TOO_BIG}"),
    ("payments", "payment", f"user_id={TOO_BIG}"),
    ("orders", "order", f"user={TOO_BIG}"),
    ("orders", "order", f"coupon__in=1,{TOO_BIG}"),
    ("orders", "order", f"pk__in=1,{TOO_BIG}"),
    ("orders", "coupon", f"owner__gt={TOO_BIG}"),
    ("outbox", "outboxevent", f"seq__in={TOO_BIG}"),
    ("outbox", "outboxevent", f"kafka_offset__in=1,{TOO_BIG}"),
    ("backoffice", "deadletter", f"offset__in={TOO_BIG}"),
    ("backoffice", "inboxentry", f"id__in=-{TOO_BIG}"),
    ("catalog", "like", f"product={TOO_BIG}"),
    ("payments", "payment", f"created_at__year={TOO_BIG}"),
    ("orders", "order", f"created_at__year__gt={TOO_BIG}"),
    ("orders", "order", "created_at__year=10000"),
]


def _changelist(app: str, model: str) -> str:
    return reverse(f"admin:{app}_{model}_changelist")


@pytest.mark.parametrize("app,model,query", LOOKUPS)
def test_an_id_no_column_can_hold_is_an_invalid_lookup_not_a_500(admin_client, app, model, query):
    url = _changelist(app, model)
    response = admin_client.get(f"{url}?{query}")
    assert response.status_code == 302, response.status_code
    assert response["Location"] == f"{url}?e=1"


@pytest.fixture
def payment(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    order = order_place(user=user_make(), lines=[OrderLineRequest(product_id=product_make().id, quantity=1)])
    return Payment.objects.create(order=order, user=order.user, amount=order.final_total, card_type="VISA")


def test_ids_a_column_can_hold_still_filter(admin_client, payment):
    url = _changelist("payments", "payment")
    shown = admin_client.get(f"{url}?order={payment.order_id}")
    assert shown.status_code == 200
    assert list(shown.context["cl"].result_list) == [payment]
    for query in (f"order={INT64_MAX}", f"order__in={payment.order_id},{INT64_MAX}", "order=abc"):
        answer = admin_client.get(f"{url}?{query}")
        assert answer.status_code in (200, 302), (query, answer.status_code)
    assert list(admin_client.get(f"{url}?order={INT64_MAX}").context["cl"].result_list) == []


NOT_OURS = {"auth", "authtoken"}  # Django's and DRF's admins


@pytest.mark.parametrize(
    "model_admin",
    [
        pytest.param(model_admin, id=f"{model._meta.app_label}.{model._meta.model_name}")
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label not in NOT_OURS
    ],
)
def test_every_admin_of_the_project_bounds_its_lookups(admin_client, model_admin):
    url = _changelist(model_admin.opts.app_label, model_admin.opts.model_name)
    assert admin_client.get(f"{url}?pk__in=1,{TOO_BIG}").status_code == 302
