"""Applying batches without a broker: once per event id, stock by version, ledger by aggregate_version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from backoffice.contract import ContractViolation, event_parse
from backoffice.models import EventLog, InboxEntry, OrderLedger, ProductMetrics
from backoffice.projections import batch_apply
from tests.backoffice.stream import (
    Record,
    like,
    order_event,
    projections_differences,
    refund_required,
    stock,
    stream_make,
    view,
)

pytestmark = pytest.mark.django_db


def _events(records: list[Record]):
    return [
        event_parse(topic=r.topic_stream, partition=0, offset=n, key=r.key, value=r.value, headers=r.headers)
        for n, r in enumerate(records)
    ]


def test_a_stream_applied_twice_equals_applied_once():
    records, expected = stream_make(events=300)
    batch_apply(group="g", events=_events(records), poison=[])
    second = batch_apply(group="g", events=_events(records), poison=[])
    assert second.applied == 0
    assert second.duplicates == 300
    assert projections_differences(expected) == []
    assert InboxEntry.objects.count() == 300
    assert EventLog.objects.count() == 300


def test_duplicates_inside_one_batch_count_once():
    record = like("1", True)
    outcome = batch_apply(group="g", events=_events([record, record, view("1")]), poison=[])
    assert outcome.applied == 2
    assert outcome.duplicates == 1
    metrics = ProductMetrics.objects.get(product_id="1")
    assert (metrics.like_count, metrics.view_count) == (1, 1)


def test_a_batch_mixing_applied_and_new_events_applies_the_new_ones_only():
    # given a stream, every third event of it already applied
    records, expected = stream_make(events=90, seed=11)
    events = _events(records)
    batch_apply(group="g", events=events[::3], poison=[])
    # when the whole stream comes as one batch (a redelivery after a partial pass)
    outcome = batch_apply(group="g", events=events, poison=[])
    # then exactly the others are applied, and the projections are the stream's, once
    assert [e.event_id for e in outcome.applied_events] == [e.event_id for n, e in enumerate(events) if n % 3]
    assert (outcome.applied, outcome.duplicates) == (60, 30)
    assert projections_differences(expected) == []
    assert EventLog.objects.count() == 90


def test_an_older_stock_event_never_overwrites_a_newer_one():
    batch_apply(group="g", events=_events([stock("5", 30, 3)]), poison=[])
    batch_apply(group="g", events=_events([stock("5", 40, 2)]), poison=[])
    metrics = ProductMetrics.objects.get(product_id="5")
    assert (metrics.stock, metrics.stock_version) == (30, 3)


@pytest.mark.parametrize("one_batch", [False, True], ids=["batch-per-event", "one-batch"])
def test_ledger_keeps_the_state_of_the_highest_aggregate_version_whatever_the_clocks(one_batch):
    # given an order's events stamped by hosts whose clocks disagree: each later event has an
    # earlier occurred_at (the cancelling worker's clock runs behind the API's)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    lines = [("3", 2, "5.00")]
    created = order_event("OrderCreated", "9", lines, occurred_at=t0, coupon_code=None)
    confirmed = order_event("OrderConfirmed", "9", lines, occurred_at=t0 - timedelta(seconds=2))
    cancelled = order_event(
        "OrderCancelled", "9", lines, occurred_at=t0 - timedelta(seconds=4), reason="x", was_confirmed=True
    )
    # when they are applied in their order
    if one_batch:
        batch_apply(group="g", events=_events([created, confirmed, cancelled]), poison=[])
    else:
        for item in (created, confirmed, cancelled):
            batch_apply(group="g", events=_events([item]), poison=[])
    # then the ledger holds the last state, by the order's sequence
    row = OrderLedger.objects.get(order_id="9")
    assert (row.status, row.aggregate_version, row.event_type) == ("CANCELLED", 3, "OrderCancelled")
    metrics = ProductMetrics.objects.get(product_id="3")
    assert (metrics.sales_quantity, metrics.sales_amount) == (0, Decimal("0.00"))


def test_an_older_version_delivered_late_does_not_overwrite_the_ledger():
    lines = [("3", 2, "5.00")]
    cancelled = order_event("OrderCancelled", "9", lines, reason="x", was_confirmed=False)
    created = order_event(
        "OrderCreated", "9", lines, coupon_code=None, occurred_at=datetime.now(UTC) + timedelta(hours=1)
    )
    batch_apply(group="g", events=_events([cancelled]), poison=[])
    batch_apply(group="g", events=_events([created]), poison=[])
    assert OrderLedger.objects.get(order_id="9").status == "CANCELLED"


def test_a_refund_due_is_recorded_on_the_order_once_whatever_it_arrives_after():
    lines = [("3", 1, "12.50")]
    refund = refund_required("9", "12.50", aggregate_version=4)
    # a refund before anything else of its order (a redrive), applied twice
    batch_apply(group="g", events=_events([refund]), poison=[])
    batch_apply(group="g", events=_events([refund]), poison=[])
    row = OrderLedger.objects.get(order_id="9")
    assert (row.refund_due, row.refund_reason, row.aggregate_version) == (Decimal("12.50"), "order_cancelled", 0)
    # then the order's states: the row takes the state, keeps the refund
    batch_apply(
        group="g",
        events=_events(
            [
                order_event("OrderCreated", "9", lines, coupon_code=None),
                order_event("OrderCancelled", "9", lines, reason="timeout", was_confirmed=False),
            ]
        ),
        poison=[],
    )
    batch_apply(
        group="g", events=_events([refund_required("9", "12.50", payment_id="502", aggregate_version=5)]), poison=[]
    )
    row = OrderLedger.objects.get(order_id="9")
    assert (row.status, row.final_total, row.refund_due) == ("CANCELLED", Decimal("12.50"), Decimal("25.00"))


def test_groups_have_their_own_inbox():
    record = view("2")
    batch_apply(group="a", events=_events([record]), poison=[])
    assert batch_apply(group="b", events=_events([record]), poison=[]).applied == 1


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda r: Record(r.topic_stream, r.key, b"{not json", r.headers), "not JSON"),
        (lambda r: Record(r.topic_stream, r.key, r.value, [h for h in r.headers if h[0] != "event_id"]), "event_id"),
        (
            lambda r: Record(
                r.topic_stream, r.key, r.value, [(n, b"nope" if n == "event_id" else v) for n, v in r.headers]
            ),
            "UUID",
        ),
        (
            lambda r: Record(
                r.topic_stream, r.key, r.value, [(n, b"Exploded" if n == "event_type" else v) for n, v in r.headers]
            ),
            "unknown event type",
        ),
        (
            lambda r: Record(
                r.topic_stream, r.key, r.value, [(n, b"9" if n == "event_version" else v) for n, v in r.headers]
            ),
            "v9",
        ),
        (lambda r: Record(r.topic_stream, r.key, b'{"product_id": "1"}', r.headers), "missing"),
        (
            lambda r: Record(r.topic_stream, r.key, r.value.replace(b'"liked": true', b'"liked": "yes"'), r.headers),
            "liked",
        ),
        (lambda r: Record(r.topic_stream, b"2", r.value, r.headers), "key"),
    ],
)
def test_contract_violations_name_the_problem(mutate, reason):
    bad = mutate(like("1", True))
    with pytest.raises(ContractViolation, match=reason):
        _events([bad])
