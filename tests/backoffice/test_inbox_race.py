"""Two consumers applying the same events at once (a rebalance, a zombie) apply them once, on
PostgreSQL, where the inbox insert is `INSERT ... ON CONFLICT DO NOTHING RETURNING`."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from backoffice.contract import event_parse
from backoffice.models import EventLog, InboxEntry, ProductMetrics
from backoffice.projections import BatchOutcome, batch_apply
from tests.backoffice.stream import like, order_event, view

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_same_batch_applied_by_two_consumers_at_once_is_applied_once():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (the full run): SQLite serializes writers, two transactions never overlap")
    # given: the first consumer has inserted the batch's inbox rows and not committed yet
    records = [like("1", True), view("1"), view("2"), order_event("OrderConfirmed", "5", [("2", 3, "2.50")])]
    events = [
        event_parse(topic=r.topic_stream, partition=0, offset=n, key=r.key, value=r.value, headers=r.headers)
        for n, r in enumerate(records)
    ]
    applied_uncommitted, release = threading.Event(), threading.Event()
    outcomes: dict[str, BatchOutcome] = {}
    errors: list[BaseException] = []

    def consumer(name: str, hold: bool) -> None:
        try:
            with transaction.atomic():
                outcomes[name] = batch_apply(group="g", events=events, poison=[])
                if hold:
                    applied_uncommitted.set()
                    release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    first = threading.Thread(target=consumer, args=("first", True))
    first.start()
    assert applied_uncommitted.wait(30)

    # when: the second applies the same events; it waits on the first's uncommitted inbox rows
    second = threading.Thread(target=consumer, args=("second", False))
    second.start()
    second.join(timeout=1.0)
    waited = second.is_alive()
    release.set()
    first.join(30)
    second.join(30)

    # then: no error to retry, the second finds every event handled, effects once
    assert errors == []
    assert waited
    assert (outcomes["first"].applied, outcomes["first"].duplicates) == (4, 0)
    assert (outcomes["second"].applied, outcomes["second"].duplicates) == (0, 4)
    assert InboxEntry.objects.filter(consumer_group="g").count() == 4
    assert EventLog.objects.count() == 4
    metrics = {m.product_id: m for m in ProductMetrics.objects.all()}
    assert (metrics["1"].like_count, metrics["1"].view_count) == (1, 1)
    assert (metrics["2"].view_count, metrics["2"].sales_quantity) == (1, 3)
