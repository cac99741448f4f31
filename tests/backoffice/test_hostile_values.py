"""A value the database cannot hold never blocks its partition (issue 12, item 4).

First line: the contract bounds every field to its column, so such a record is a dead letter
with the reason. Second line: should a value still be refused by the database (a bound
loosened, a counter that overflows only once summed), the error that repeats on the batch is
bisected to the record, which is dead-lettered with the database's message, and the rest of the
batch applied. Both run on SQLite (unit phase) and PostgreSQL (full phase), whose refusals
differ (OverflowError against DataError).
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings, strategies as st

from backoffice import contract
from backoffice.contract import ContractViolation, event_parse
from backoffice.isolation import batch_apply_isolating, records_parse
from backoffice.models import DeadLetter, EventLog, InboxEntry, OrderLedger, ProductMetrics
from backoffice.projections import BatchOutcome, PoisonRecord
from tests.backoffice.stream import Consumed, Record, consumed, like, order_event, record, stock, view

pytestmark = pytest.mark.django_db

# The three records of the issue, each reproduced on main blocking its partition.
HOSTILE = {
    "order line quantity 10**30": lambda: order_event("OrderConfirmed", "50", [("3", 10**30, "0.00")]),
    "stock version 2**70": lambda: stock("3", 5, 2**70),
    "twenty-digit product id": lambda: like("12345678901234567890", True),
}


def _apply(records: list[Consumed]) -> tuple[BatchOutcome, list[PoisonRecord]]:
    forwarded: list[PoisonRecord] = []
    outcome = batch_apply_isolating(group="g", batch=records_parse(records), forward=forwarded.extend)
    return outcome, forwarded


def _surrounded(bad: Record) -> tuple[list[Record], Record]:
    """Good records of the same partition before and after the bad one."""
    before = [like("3", True), view("3"), stock("3", 9, 1), order_event("OrderConfirmed", "41", [("3", 2, "5.00")])]
    after = [
        view("3"),
        stock("3", 8, 2),
        order_event("OrderConfirmed", "42", [("3", 1, "5.00")]),
        like("3", True, user_id="2"),
    ]
    return [*before, bad, *after], bad


def _assert_good_ones_applied_once(records: list[Record], bad: Record) -> None:
    good = [r for r in records if r is not bad]
    assert set(InboxEntry.objects.values_list("event_id", flat=True)) == {uuid.UUID(r.event_id) for r in good}
    metrics = ProductMetrics.objects.get(product_id="3")
    assert (metrics.like_count, metrics.view_count, metrics.stock, metrics.stock_version) == (2, 2, 8, 2)
    assert (metrics.sales_quantity, metrics.sales_amount) == (3, Decimal("15.00"))
    assert set(OrderLedger.objects.values_list("order_id", flat=True)) == {"41", "42"}
    assert EventLog.objects.count() == len(good)


@pytest.mark.parametrize("name", HOSTILE)
def test_the_contract_refuses_a_value_its_column_cannot_hold(name):
    bad = HOSTILE[name]()
    with pytest.raises(ContractViolation, match=r"range|largest key|column"):
        event_parse(topic="t", partition=0, offset=0, key=bad.key, value=bad.value, headers=bad.headers)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_record_is_dead_lettered_and_its_neighbours_applied_once(name):
    # given good records before and after the hostile one on the same partition
    records, bad = _surrounded(HOSTILE[name]())
    # when the batch is applied twice (a redelivery)
    outcome, forwarded = _apply(consumed(records))
    again, _ = _apply(consumed(records))
    # then the bad one is a dead letter with the reason, every other applied exactly once
    assert (outcome.applied, outcome.dead_lettered) == (len(records) - 1, 1)
    assert again.applied == 0
    letter = DeadLetter.objects.get()
    assert letter.offset == records.index(bad)
    assert letter.value is not None
    assert bytes(letter.value) == bad.value
    assert letter.error
    assert [p.offset for p in forwarded] == [letter.offset]
    _assert_good_ones_applied_once(records, bad)


@pytest.mark.parametrize("name", ["order line quantity 10**30", "stock version 2**70"])
def test_with_the_contract_bounds_off_the_database_refusal_is_isolated(name, monkeypatch):
    # given a contract loosened by mistake: the database is the one to refuse the value
    monkeypatch.setattr(contract, "INTEGER_MAX", 10**40)
    records, bad = _surrounded(HOSTILE[name]())
    # when the batch is applied
    outcome, forwarded = _apply(consumed(records))
    # then the record is isolated by bisection and dead-lettered with the database's message
    assert (outcome.applied, outcome.dead_lettered) == (len(records) - 1, 1)
    letter = DeadLetter.objects.get()
    assert letter.offset == records.index(bad)
    assert [p.offset for p in forwarded] == [letter.offset]
    assert letter.error.startswith("refused by the database:")
    assert any(word in letter.error for word in ("out of range", "too large", "Overflow")), letter.error
    _assert_good_ones_applied_once(records, bad)


def test_with_the_id_length_bound_off_an_id_longer_than_its_column_is_isolated(monkeypatch):
    # given ids of any length accepted by mistake
    monkeypatch.setattr(contract, "ID_MAX_LENGTH", 1000)
    monkeypatch.setattr(contract, "ID_MAX", 10**100)
    long_id = "1" + "0" * 70
    records, bad = _surrounded(like(long_id, True))
    # when the batch is applied
    outcome, _ = _apply(consumed(records))
    # then PostgreSQL's varchar(64) refuses it and it alone is dead-lettered; SQLite, which does
    # not enforce lengths, stores it
    if connection.vendor == "postgresql":
        assert (outcome.applied, outcome.dead_lettered) == (len(records) - 1, 1)
        assert "too long" in DeadLetter.objects.get().error
        _assert_good_ones_applied_once(records, bad)
    else:
        assert (outcome.applied, outcome.dead_lettered) == (len(records), 0)
        assert ProductMetrics.objects.get(product_id=long_id).like_count == 1


def test_sales_at_the_contracts_bounds_sum_without_overflow():
    # given two orders of one product, each line at the largest quantity and amount the contract
    # lets a record carry (an integer, numeric(14,2)), then an ordinary one
    big, most = contract.INTEGER_MAX, Decimal("999999999999.99")
    records = [
        order_event("OrderConfirmed", "1", [("3", big, "0.00")]),
        order_event("OrderConfirmed", "2", [("3", 1, str(most))]),
        order_event("OrderConfirmed", "3", [("3", big, "0.00")]),
        order_event("OrderConfirmed", "4", [("3", 1, str(most))]),
        order_event("OrderConfirmed", "5", [("3", 2, "5.00")]),
    ]
    # when they are applied
    outcome, _ = _apply(consumed(records))
    # then every one is counted: the sums are wider than their terms (before, one record at the
    # bound made every later sale of the product overflow and be dead-lettered)
    assert (outcome.applied, outcome.dead_lettered) == (5, 0)
    metrics = ProductMetrics.objects.get(product_id="3")
    assert (metrics.sales_quantity, metrics.sales_amount) == (2 * big + 4, 2 * most + Decimal("10.00"))


def test_a_counter_that_overflows_only_once_summed_is_isolated(monkeypatch):
    # given a contract loosened to let 2**62 through, and two orders whose quantities each fit
    # the sum's column (bigint), but not their sum
    monkeypatch.setattr(contract, "INTEGER_MAX", 2**63 - 1)
    big = 2**62
    records = [
        order_event("OrderConfirmed", "1", [("3", big, "0.00")]),
        view("3"),
        order_event("OrderConfirmed", "2", [("3", big, "0.00")]),
        view("3"),
    ]
    # when they come in one batch
    outcome, _ = _apply(consumed(records))
    if connection.vendor != "postgresql":
        # (SQLite, the laptop's default, turns an integer sum past 64 bits into a real: no error)
        assert (outcome.applied, outcome.dead_lettered) == (4, 0)
        return
    # then the second order, the one that overflows, is the dead letter; the rest applied
    assert (outcome.applied, outcome.dead_lettered) == (3, 1)
    assert DeadLetter.objects.get().offset == 2
    metrics = ProductMetrics.objects.get(product_id="3")
    assert (metrics.sales_quantity, metrics.view_count) == (big, 2)


# Values a producer can write into any field: the contract refuses them or the database holds
# them; never an exception out of the consumer.
_HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, 2**64]),
    st.text(max_size=80),
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\ud800",
            "9" * 20,
            "9" * 70,
            "1e400",
            "NaN",
            "-0.001",
            "123456789012.5",
            "1" * 13 + ".00",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+14:00",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_TEMPLATES = [
    like("1", True),
    view("1"),
    stock("1", 5, 1),
    order_event("OrderConfirmed", "1", [("1", 2, "3.00")]),
    order_event("OrderCancelled", "1", [("1", 2, "3.00")], reason="x", was_confirmed=True),
]


def _mutated(template: Record, path: tuple, value: object) -> Record:
    payload = json.loads(template.value)
    target = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    try:
        body = json.dumps(payload).encode()
    except (ValueError, UnicodeEncodeError):
        body = json.dumps(payload, ensure_ascii=True).encode()
    return Record(template.topic_stream, template.key, body, template.headers)


def _paths(payload: dict[str, Any]) -> list[tuple[str | int, ...]]:
    paths: list[tuple[str | int, ...]] = [(name,) for name in payload]
    for index, line in enumerate(payload.get("lines", [])):
        paths += [("lines", index, name) for name in line]
    return paths


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_value_a_producer_can_write_escapes_the_consumer(data):
    # given a good record, a record with one field (or one header) set to a hostile value, and
    # another good record, on one partition
    template = data.draw(st.sampled_from(_TEMPLATES))
    if data.draw(st.booleans()):
        path = data.draw(st.sampled_from(_paths(json.loads(template.value))))
        hostile = _mutated(template, path, data.draw(_HOSTILE_VALUES))
    else:
        name = data.draw(st.sampled_from([name for name, _ in template.headers] + ["aggregate_version"]))
        raw = data.draw(
            st.one_of(
                st.binary(max_size=40), st.sampled_from([b"\x00", b"9" * 30, b"-1", str(2**63).encode(), b"\xff\xfe"])
            )
        )
        hostile = Record(
            template.topic_stream,
            template.key,
            template.value,
            [(n, v) for n, v in template.headers if n != name] + [(name, raw)],
        )
    first, last = view("7"), like("7", True, user_id=str(data.draw(st.integers(1, 10**6))))
    # when the consumer applies them
    outcome, _ = _apply(consumed([first, hostile, last]))
    # then nothing escaped, the good ones are applied, the hostile one is applied or dead-lettered
    assert outcome.applied + outcome.dead_lettered + outcome.duplicates == 3
    handled = {str(e) for e in InboxEntry.objects.values_list("event_id", flat=True)}
    assert {first.event_id, last.event_id} <= handled
    InboxEntry.objects.all().delete()
    DeadLetter.objects.all().delete()
    ProductMetrics.objects.all().delete()
    OrderLedger.objects.all().delete()
    EventLog.objects.all().delete()


def test_a_record_without_an_aggregate_version_where_one_is_required_is_dead_lettered():
    confirmed = order_event("OrderConfirmed", "5", [("3", 1, "5.00")])
    unversioned = Record(
        confirmed.topic_stream,
        confirmed.key,
        confirmed.value,
        [h for h in confirmed.headers if h[0] != "aggregate_version"],
    )
    viewed = record("ProductViewed", "product", "3", {"product_id": "3", "user_id": None})
    outcome, forwarded = _apply(consumed([unversioned, viewed]))
    assert (outcome.applied, outcome.dead_lettered) == (1, 1)
    assert "aggregate_version" in forwarded[0].error


def test_a_header_without_a_value_is_read_as_absent():
    # Kafka Connect writes a null aggregate_version column (a view) as a header with no value
    viewed = view("3")
    with_null: list[tuple[str, bytes | None]] = [*viewed.headers, ("aggregate_version", None)]
    event = event_parse(topic="t", partition=0, offset=0, key=viewed.key, value=viewed.value, headers=with_null)
    assert event.aggregate_version is None
