"""Redriving dead letters: each letter is tried on its own; one the database still refuses stays
open with the database's message, and the letters after it are redriven all the same."""

from __future__ import annotations

import pytest

from backoffice import contract
from backoffice.models import DeadLetter, InboxEntry, OrderLedger, ProductMetrics
from backoffice.projections import DATABASE_REFUSED
from backoffice.services import dead_letters_redrive
from tests.backoffice.stream import Record, like, order_event

pytestmark = pytest.mark.django_db


def _dead_letter(record: Record, *, offset: int) -> DeadLetter:
    return DeadLetter.objects.create(
        consumer_group="g",
        topic=record.topic_stream,
        partition=0,
        offset=offset,
        key=record.key,
        value=record.value,
        headers=[[name, value.decode("latin-1")] for name, value in record.headers],
        error="dead-lettered before the fix",
    )


def test_a_letter_the_database_still_refuses_stays_open_and_the_next_ones_are_redriven(monkeypatch):
    # given a contract that lets an order line's quantity of 10**30 through (the fix of the
    # contract for the first letter was wrong: the database refuses the value)
    monkeypatch.setattr(contract, "INTEGER_MAX", 10**40)
    refused = _dead_letter(order_event("OrderConfirmed", "50", [("3", 10**30, "0.00")]), offset=0)
    after = [
        _dead_letter(like("3", True), offset=1),
        _dead_letter(order_event("OrderConfirmed", "51", [("3", 2, "5.00")]), offset=2),
    ]
    # when every open letter is redriven
    result = dead_letters_redrive()
    # then the refused one stays open with the database's message, the others are applied once
    assert (result.redriven, result.still_failing) == (2, 1)
    refused.refresh_from_db()
    assert refused.status == DeadLetter.Status.OPEN
    assert refused.error.startswith(DATABASE_REFUSED)
    assert set(DeadLetter.objects.filter(status=DeadLetter.Status.REDRIVEN).values_list("id", flat=True)) == {
        letter.id for letter in after
    }
    assert InboxEntry.objects.count() == 2
    assert ProductMetrics.objects.get(product_id="3").like_count == 1
    assert set(OrderLedger.objects.values_list("order_id", flat=True)) == {"51"}
