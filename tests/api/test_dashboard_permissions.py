"""The pipeline dashboard is for staff who may view what it shows, like the admin's lists: the
overview needs `outbox.view_outboxevent`, an order's trace `orders.view_order` as well. A staff
user without them was shown every order's user, status, total, trace id and offsets."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from orders.services import OrderLineRequest, order_place
from tests.factories import product_make, user_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_kafka(monkeypatch):
    # The overview asks Kafka for the lag and the topics' policy: answered as "unavailable" here.
    monkeypatch.setattr("commerce.dashboard.consumer_lag", lambda group: "Kafka unavailable: test")
    monkeypatch.setattr("commerce.dashboard.topics_check_report", lambda **_: ([], "Kafka unavailable: test"))


@pytest.fixture
def order(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    product = product_make(stock=5)
    return order_place(user=user_make(), lines=[OrderLineRequest(product_id=product.id, quantity=1)])


def _login(client, codenames: list[str], *, superuser: bool = False):
    user = user_make(is_staff=True)
    if superuser:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)


def _pages(order) -> tuple[str, str]:
    return reverse("pipeline-dashboard"), reverse("pipeline-order-trace", args=[order.id])


def test_staff_without_permissions_is_refused_the_dashboard_and_the_trace(client, order):
    # given: staff with no permission, refused the order list already
    _login(client, [])
    assert client.get(reverse("admin:orders_order_changelist")).status_code == 403
    # when
    overview, trace = _pages(order)
    answers = [client.get(overview), client.get(trace)]
    # then: refused, and nothing of the order shown
    assert [a.status_code for a in answers] == [403, 403]
    assert all(order.number.encode() not in a.content for a in answers)


def test_view_on_the_outbox_shows_the_overview_without_orders_or_a_trace(client, order):
    _login(client, ["view_outboxevent"])
    overview, trace = _pages(order)
    page = client.get(overview)
    assert page.status_code == 200
    assert order.number.encode() not in page.content
    assert client.get(trace).status_code == 403


def test_view_on_orders_alone_does_not_show_the_trace(client, order):
    # the trace lists the order's outbox rows: topics, offsets, event ids
    _login(client, ["view_order"])
    overview, trace = _pages(order)
    assert client.get(overview).status_code == 403
    assert client.get(trace).status_code == 403


def test_view_on_the_outbox_and_orders_shows_both_pages(client, order):
    _login(client, ["view_outboxevent", "view_order"])
    overview, trace = _pages(order)
    page = client.get(overview)
    assert page.status_code == 200
    assert order.number.encode() in page.content
    trace_page = client.get(trace)
    assert trace_page.status_code == 200
    assert order.number.encode() in trace_page.content


def test_a_superuser_sees_both_pages(client, order):
    _login(client, [], superuser=True)
    overview, trace = _pages(order)
    assert client.get(overview).status_code == 200
    assert client.get(trace).status_code == 200


def test_anonymous_is_sent_to_the_login(client, order):
    overview, trace = _pages(order)
    for url in (overview, trace):
        answer = client.get(url)
        assert answer.status_code == 302
        assert "/admin/login/" in answer["Location"]
