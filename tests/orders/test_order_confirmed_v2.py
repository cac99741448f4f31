"""The domain produces OrderConfirmed v2 (line subtotals, the shop's currency) from now on."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from backoffice.contract import event_parse
from orders.services import OrderLineRequest, order_confirm, order_place
from outbox.models import OutboxEvent
from outbox.relay import record_headers
from outbox.relay.rows import SEND_FIELDS, ClaimedRow
from tests.factories import product_make, user_make


@pytest.fixture
def silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"


@pytest.mark.django_db
def test_a_confirmed_order_records_version_2_with_subtotals_and_currency(silent_gateway, settings):
    # given an order of two lines in a shop selling in CHF
    settings.SHOP_CURRENCY = "CHF"
    user = user_make()
    first, second = product_make(price="12.50", stock=5), product_make(price="3.00", stock=5)
    order = order_place(
        user=user,
        lines=[OrderLineRequest(product_id=first.id, quantity=2), OrderLineRequest(product_id=second.id, quantity=3)],
    )
    # when it is confirmed
    order_confirm(order_id=order.id)
    # then its event is version 2: each line with its subtotal, the order with its currency
    row = OutboxEvent.objects.get(type="OrderConfirmed", aggregateid=str(order.id))
    assert row.event_version == 2
    assert row.payload["currency"] == "CHF"
    assert [(line["quantity"], line["unit_price"], line["subtotal"]) for line in row.payload["lines"]] == [
        (2, "12.50", "25.00"),
        (3, "3.00", "9.00"),
    ]
    assert sum(Decimal(line["subtotal"]) for line in row.payload["lines"]) == Decimal(row.payload["original_total"])


@pytest.mark.django_db
def test_the_back_office_reads_the_recorded_v2_as_it_is(silent_gateway):
    # given a confirmed order's outbox row, as the relay would publish it
    order = order_place(user=user_make(), lines=[OrderLineRequest(product_id=product_make(stock=5).id, quantity=2)])
    order_confirm(order_id=order.id)
    row = OutboxEvent.objects.get(type="OrderConfirmed", aggregateid=str(order.id))
    claimed = ClaimedRow.from_orm_values(
        (*OutboxEvent.objects.filter(seq=row.seq).values_list(*SEND_FIELDS).get(), json.dumps(row.payload))
    )
    # when the back office parses it, then it is v2, not upcast
    event = event_parse(
        topic=row.topic,
        partition=0,
        offset=0,
        key=row.key.encode(),
        value=claimed.payload_text.encode(),
        headers=record_headers(claimed),
    )
    assert (event.event_version, event.payload_version) == (2, 2)
    assert event.payload["lines"][0]["subtotal"] == Decimal("20.00")
