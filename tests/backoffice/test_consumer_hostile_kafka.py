"""Hostile values and skewed clocks through the real broker and `consume_events` (issue 12,
items 4 and 5): no record stops its partition, the ledger follows the order's sequence."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings

from backoffice import contract
from backoffice.consumer import EventConsumer
from backoffice.models import DeadLetter, InboxEntry, OrderLedger, ProductMetrics
from tests.backoffice.stream import like, order_event, produce, stock, view
from tests.backoffice.test_hostile_values import HOSTILE
from tests.support.kafka import kafka_read_all
from tests.support.processes import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _consume(group: str) -> EventConsumer:
    consumer = EventConsumer(topics=list(settings.KAFKA_TOPICS.values()), group_id=group, batch_size=200)
    try:
        consumer.run(until_idle_s=3.0)
    finally:
        consumer.close()
    return consumer


def _hostile_stream() -> tuple[list, list]:
    """Per topic, on partition 0: good records, the issue's hostile ones between them."""
    catalog = [
        like("3", True),
        stock("3", 9, 1),
        HOSTILE["stock version 2**70"](),
        view("3"),
        HOSTILE["twenty-digit product id"](),
        stock("3", 8, 2),
        like("3", True, user_id="2"),
    ]
    orders = [
        order_event("OrderConfirmed", "41", [("3", 2, "5.00")]),
        HOSTILE["order line quantity 10**30"](),
        order_event("OrderConfirmed", "42", [("3", 1, "5.00")]),
    ]
    return catalog, orders


def _assert_applied_once_and_dead_lettered(records: list, kafka_topics: dict[str, str]) -> None:
    bad_values = {HOSTILE[name]().value.split(b'"occurred_at"')[0] for name in HOSTILE}
    good = [r for r in records if r.value.split(b'"occurred_at"')[0] not in bad_values]
    assert len(good) == len(records) - 3
    assert {str(e) for e in InboxEntry.objects.values_list("event_id", flat=True)} == {r.event_id for r in good}
    metrics = ProductMetrics.objects.get(product_id="3")
    assert (metrics.like_count, metrics.view_count, metrics.stock, metrics.stock_version) == (2, 1, 8, 2)
    assert (metrics.sales_quantity, metrics.sales_amount) == (3, Decimal("15.00"))
    assert set(OrderLedger.objects.values_list("order_id", flat=True)) == {"41", "42"}
    assert DeadLetter.objects.count() == 3
    assert len(kafka_read_all(f"{kafka_topics['catalog-events']}.dlq", expected=2)) == 2
    assert len(kafka_read_all(f"{kafka_topics['order-events']}.dlq", expected=1)) == 1


def test_hostile_values_are_dead_lettered_and_their_partition_moves_on(kafka_topics, subprocess_env, tmp_path):
    # given the three records between good ones, on one partition of each topic
    catalog, orders = _hostile_stream()
    produce(catalog, kafka_topics, partition=0)
    produce(orders, kafka_topics, partition=0)
    # when consume_events reads them (on main it retried forever on PostgreSQL and exited 1 on SQLite)
    process = ManagedProcess(
        name="consumer",
        env=subprocess_env,
        log_path=tmp_path / "consumer.log",
        ready_text="consuming",
        argv=[
            sys.executable,
            "manage.py",
            "consume_events",
            "--group",
            f"g-{uuid.uuid4().hex[:6]}",
            "--until-idle",
            "4",
        ],
    )
    process.start()
    # then it exits 0 having applied every good record once and dead-lettered the three
    assert process.wait(timeout=120) == 0, process.log_tail()
    _assert_applied_once_and_dead_lettered(catalog + orders, kafka_topics)


def test_with_a_bound_loosened_the_consumer_isolates_the_record_the_database_refuses(kafka_topics, monkeypatch):
    # given a contract that lets integers of any size through (the second line of defence alone)
    monkeypatch.setattr(contract, "INTEGER_MAX", 10**40)
    catalog, orders = _hostile_stream()
    produce(catalog, kafka_topics, partition=0)
    produce(orders, kafka_topics, partition=0)
    # when the consumer reads them in batches that hold the bad records among good ones
    consumer = _consume(f"g-{uuid.uuid4().hex[:6]}")
    # then the database's refusals are bisected to their records: the same end state
    assert consumer.stats.dead_lettered == 3
    _assert_applied_once_and_dead_lettered(catalog + orders, kafka_topics)
    refused = DeadLetter.objects.filter(error__startswith="refused by the database:")
    assert refused.count() == 2  # 2**70 and 10**30; the twenty-digit id is still past ID_MAX


def test_an_order_delivered_with_clocks_skewed_backwards_ends_in_its_last_state(kafka_topics):
    # given orders whose each later event was stamped by a host whose clock is seconds behind
    t0 = datetime.now(UTC)
    records = []
    for n in range(1, 31):
        order_id, lines = str(n), [("5", n, "2.50")]
        records.append(order_event("OrderCreated", order_id, lines, occurred_at=t0, coupon_code=None))
        records.append(order_event("OrderConfirmed", order_id, lines, occurred_at=t0 - timedelta(seconds=1)))
        if n % 3 == 0:
            records.append(
                order_event(
                    "OrderCancelled",
                    order_id,
                    lines,
                    occurred_at=t0 - timedelta(seconds=2),
                    reason="changed mind",
                    was_confirmed=True,
                )
            )
    produce(records, kafka_topics)
    produce(records, kafka_topics)  # and every record twice
    # when the back office consumes them
    _consume(f"g-{uuid.uuid4().hex[:6]}")
    # then every order is in its last state, by its sequence, not by the clocks
    ledger = dict(OrderLedger.objects.values_list("order_id", "status"))
    assert ledger == {str(n): "CANCELLED" if n % 3 == 0 else "CONFIRMED" for n in range(1, 31)}
    kept = sum(n for n in range(1, 31) if n % 3)
    metrics = ProductMetrics.objects.get(product_id="5")
    assert (metrics.sales_quantity, metrics.sales_amount) == (kept, Decimal("2.50") * kept)
