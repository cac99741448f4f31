"""OrderConfirmed v1 and v2 on one topic: the back office reads both (v1 through its upcaster),
and a replay gives the projections the live run gave (docs/EVENTS.md, "Evolving an event")."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command

from backoffice.consumer import EventConsumer
from backoffice.models import EventLog, InboxEntry, OrderLedger, ProductMetrics
from tests.backoffice.stream import Record, order_event, produce, record

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def order_confirmed_v2(order_id: str, lines: list[tuple[str, int, str]], currency: str = "EUR") -> Record:
    lines_payload: list[dict[str, str | int]] = [
        {
            "product_id": p,
            "quantity": q,
            "unit_price": price,
            "subtotal": str((Decimal(price) * q).quantize(Decimal("0.01"))),
        }
        for p, q, price in lines
    ]
    total = str(sum((Decimal(line["subtotal"]) for line in lines_payload), Decimal("0.00")))
    return record(
        "OrderConfirmed",
        "order",
        order_id,
        {
            "order_id": order_id,
            "order_number": f"ORD-{order_id}",
            "user_id": "7",
            "original_total": total,
            "discount": "0.00",
            "final_total": total,
            "lines": lines_payload,
            "currency": currency,
        },
        version=2,
        aggregate_version=2,
    )


def _snapshot() -> tuple[list, list]:
    metrics = sorted(ProductMetrics.objects.values_list("product_id", "sales_quantity", "sales_amount"))
    ledger = sorted(
        OrderLedger.objects.values_list("order_id", "status", "final_total", "aggregate_version", "event_type")
    )
    return metrics, ledger


def _consume(group: str) -> None:
    consumer = EventConsumer(topics=list(settings.KAFKA_TOPICS.values()), group_id=group, batch_size=50)
    try:
        consumer.run(until_idle_s=3.0)
    finally:
        consumer.close()


def test_a_topic_of_v1_and_v2_records_replays_to_the_live_projections(kafka_topics, settings):
    # given orders confirmed before the upgrade (v1) and after it (v2), on the same topic
    rng = random.Random(16)
    records: list[Record] = []
    sold: dict[str, tuple[int, Decimal]] = {}
    for n in range(60):
        order_id = str(1000 + n)
        lines = [
            (str(rng.randint(1, 8)), rng.randint(1, 4), f"{rng.randint(1, 9999) / 100:.2f}")
            for _ in range(rng.randint(1, 3))
        ]
        records.append(order_event("OrderCreated", order_id, lines, coupon_code=None))
        if n < 30:
            records.append(order_event("OrderConfirmed", order_id, lines, version=1))  # no subtotal, no currency
        else:
            records.append(order_confirmed_v2(order_id, lines))
        for product, quantity, price in lines:
            count, amount = sold.get(product, (0, Decimal("0.00")))
            sold[product] = (count + quantity, amount + quantity * Decimal(price))
    assert {
        dict(r.headers)["event_version"] for r in records if b"OrderConfirmed" in dict(r.headers)["event_type"]
    } == {b"1", b"2"}
    produce(records, kafka_topics)
    group = f"g-{uuid.uuid4().hex[:6]}"
    settings.BACKOFFICE_GROUP_ID = group
    # when the back office consumes them live
    _consume(group)
    live = _snapshot()
    # then every record is applied (none dead-lettered), v1 and v2 alike
    assert InboxEntry.objects.filter(consumer_group=group).count() == len(records)
    assert live[0] == sorted((product, count, amount) for product, (count, amount) in sold.items())
    assert {row[1] for row in live[1]} == {"CONFIRMED"}
    assert len(live[1]) == 60
    # the event log keeps each record as it came: v1 as v1
    assert sorted(
        set(EventLog.objects.filter(event_type="OrderConfirmed").values_list("event_version", flat=True))
    ) == [1, 2]
    # when the projections are rebuilt from the topic
    call_command("rebuild_projections", "--group", group, "--until-idle", "3")
    # then they are the live ones
    assert _snapshot() == live
    assert InboxEntry.objects.filter(consumer_group=group).count() == len(records)
