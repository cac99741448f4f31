"""The producer's end of the event schemas: in development and tests, recording an event whose
payload does not match its JSON Schema raises in the service, and writes nothing."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from django.db import transaction

from catalog.events import StockChanged
from orders.events import OrderCreated, OrderLinePayload
from outbox.envelope import DomainEvent
from outbox.models import OutboxEvent
from outbox.recording import outbox_record
from outbox.schema_check import EventSchemaMismatch

pytestmark = pytest.mark.django_db


def _created(*, quantity: int, aggregate_version: int | None = 1) -> OrderCreated:
    return OrderCreated(
        order_id="41",
        order_number="ORD-41",
        user_id="7",
        original_total=Decimal("10.00"),
        discount=Decimal("0.00"),
        final_total=Decimal("10.00"),
        coupon_code=None,
        lines=(OrderLinePayload(product_id="3", quantity=quantity, unit_price=Decimal("5.00")),),
        aggregate_version=aggregate_version,
    )


def test_the_check_is_on_under_tests(settings):
    assert settings.OUTBOX_EVENT_SCHEMA_CHECK is True


def test_an_event_that_breaks_its_schema_raises_where_it_is_recorded():
    # when an order line of quantity -1 is recorded
    with pytest.raises(EventSchemaMismatch) as raised, transaction.atomic():
        outbox_record(event=_created(quantity=-1))
    # then the error names the event, the path and the rule, and no row is written
    assert str(raised.value).startswith("OrderCreated v1: payload.lines[0].quantity: -1 is less than the minimum of 1")
    assert not OutboxEvent.objects.exists()


def test_a_value_past_its_column_raises_where_it_is_recorded():
    event = StockChanged(product_id="3", quantity=2**40, version=1, delta=-1, reason="reserve")
    with (
        pytest.raises(EventSchemaMismatch, match=r"payload.quantity: 1099511627776 is greater than"),
        transaction.atomic(),
    ):
        outbox_record(event=event)


def test_an_ordered_event_without_its_aggregate_version_raises():
    with pytest.raises(EventSchemaMismatch, match="aggregate_version is required"), transaction.atomic():
        outbox_record(event=_created(quantity=2, aggregate_version=None))


def test_with_the_check_off_the_event_is_recorded_and_left_to_the_back_office(settings):
    settings.OUTBOX_EVENT_SCHEMA_CHECK = False
    with transaction.atomic():
        outbox_record(event=_created(quantity=-1))
    assert OutboxEvent.objects.get().payload["lines"][0]["quantity"] == -1


def test_a_valid_event_is_recorded():
    with transaction.atomic():
        outbox_record(event=_created(quantity=2))
    assert OutboxEvent.objects.get().type == "OrderCreated"


def test_an_event_outside_the_contract_is_left_to_the_contract_test():
    # a test's own event class: no schema to check it against (tests/test_event_contract.py
    # makes every class of the domain apps part of the contract)
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class SomethingHappened(DomainEvent):
        stream = "order-events"
        aggregate_type = "order"
        aggregate_field = "order_id"
        order_id: str

    with transaction.atomic():
        outbox_record(event=SomethingHappened(order_id="1"))
    assert OutboxEvent.objects.get().type == "SomethingHappened"
