"""Every event of an order carries the order's next `aggregate_version`, taken under its row lock
in the event's transaction: consecutive per order, whatever process or clock recorded it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from django.db import connection, connections

from commerce.errors import DomainError
from orders.models import Order
from orders.services import OrderLineRequest, order_cancel, order_confirm, order_place
from outbox.models import OutboxEvent
from payments.services import payment_complete, payment_request
from tests.factories import product_make, user_make


def _versions(aggregate_type: str, aggregate_id: int) -> list[tuple[str, int | None]]:
    return list(
        OutboxEvent.objects.filter(aggregatetype=aggregate_type, aggregateid=str(aggregate_id))
        .order_by("seq")
        .values_list("type", "aggregate_version")
    )


@pytest.fixture
def silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"


@pytest.mark.django_db
def test_an_orders_events_carry_consecutive_versions(silent_gateway):
    # given
    user = user_make()
    product = product_make(stock=5)
    # when: placed, paid, confirmed, cancelled by its user (the payment becomes refund-due)
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=2)])
    payment = payment_request(user=user, order_id=order.id, card_type="VISA")
    payment_complete(transaction_key=payment.transaction_key)
    order_confirm(order_id=order.id)
    order_cancel(order_id=order.id, reason="changed my mind")
    # then
    assert _versions("order", order.id) == [
        ("OrderCreated", 1),
        ("PaymentCompleted", 2),
        ("OrderConfirmed", 3),
        ("OrderCancelled", 4),
        ("PaymentRefundRequired", 5),
    ]
    assert Order.objects.get(id=order.id).version == 5


@pytest.mark.django_db
def test_an_event_that_changes_nothing_takes_no_version(silent_gateway):
    user = user_make()
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product_make().id, quantity=1)])
    order_confirm(order_id=order.id)
    order_confirm(order_id=order.id)  # confirming twice emits nothing
    assert _versions("order", order.id) == [("OrderCreated", 1), ("OrderConfirmed", 2)]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_updates_of_one_order_get_distinct_increasing_versions(silent_gateway):
    if connection.vendor != "postgresql":
        pytest.fail("this guarantee is proven on PostgreSQL: run with DATABASE_URL=postgres://...")
    # given: orders with a pending payment; for each, a capture and a user's cancel race
    user = user_make()
    product = product_make(stock=1000)
    payments = []
    for _ in range(15):
        order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=1)])
        payments.append(payment_request(user=user, order_id=order.id, card_type="VISA"))
    calls: list[Callable[..., object]] = []
    for payment in payments:
        calls.append(lambda p=payment: payment_complete(transaction_key=p.transaction_key))
        calls.append(lambda p=payment: order_cancel(order_id=p.order_id, reason="race"))
        calls.append(lambda p=payment: order_confirm(order_id=p.order_id))
    barrier = Barrier(len(calls))

    def run(call) -> None:
        barrier.wait()
        try:
            call()
        except DomainError:
            pass  # confirming a cancelled order: refused, records nothing
        finally:
            connections.close_all()

    # when
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        list(pool.map(run, calls))
    # then: per order, versions are 1..n in commit (seq) order, and the row's counter is n
    for payment in payments:
        versions = [version for _, version in _versions("order", payment.order_id)]
        assert versions == list(range(1, len(versions) + 1)), _versions("order", payment.order_id)
        assert Order.objects.get(id=payment.order_id).version == len(versions)
        assert len(versions) >= 3  # created, the capture, the cancel (and more, by the race)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_repeated_capture_racing_the_cancel_of_a_paid_order_neither_deadlocks_nor_skips_a_version(silent_gateway):
    if connection.vendor != "postgresql":
        pytest.fail("this guarantee is proven on PostgreSQL: run with DATABASE_URL=postgres://...")
    # given: paid orders (the capture recorded)
    user = user_make()
    product = product_make(stock=1000)
    payments = []
    for _ in range(15):
        order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=1)])
        payment = payment_request(user=user, order_id=order.id, card_type="VISA")
        payment_complete(transaction_key=payment.transaction_key)
        payments.append(payment)
    # when: the gateway repeats the capture while the user cancels (which locks the order, then
    # its captured payment, to make it refund-due)
    calls = [
        call
        for payment in payments
        for call in (
            lambda p=payment: payment_complete(transaction_key=p.transaction_key),
            lambda p=payment: order_cancel(order_id=p.order_id, reason="race"),
        )
    ]
    barrier = Barrier(len(calls))
    errors = []

    def run(call) -> None:
        barrier.wait()
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a deadlock is what this test looks for
            errors.append(repr(exc))
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        list(pool.map(run, calls))
    # then
    assert errors == []
    for payment in payments:
        assert _versions("order", payment.order_id) == [
            ("OrderCreated", 1),
            ("PaymentCompleted", 2),
            ("OrderCancelled", 3),
            ("PaymentRefundRequired", 4),
        ]
