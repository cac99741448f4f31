"""What a claim reads on PostgreSQL does not grow with the backlog: its scans stop at the limit,
and each per-key check is one probe of the (key, seq) index, never a read of every unfinished row."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.db import connection

from outbox.relay import claim_batch
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.fail("the claim's plan is PostgreSQL's: run with DATABASE_URL=postgres://...")


def _buffers_read_by_the_claims_selects(limit: int, *, analyze: bool = True, in_flight: uuid.UUID | None = None) -> int:
    """Run `claim_batch(limit)`; return the buffers (shared hit + read) its SELECTs touched (the
    candidates, and the rows of their keys outside the claim), each measured by EXPLAIN ANALYZE
    of the same statement right after it ran, in the claim's own transaction (its planner
    settings apply; the rows it locked are its own)."""
    if analyze:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE outbox_outboxevent")  # as autovacuum leaves a production table
    touched = 0

    def measure(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal touched
        result = execute(sql, params, many, context)
        if sql.startswith(("SELECT o.seq", "SELECT o.key", "SELECT k.key")):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
                (plan,) = cursor.fetchone()
                top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
                touched += top["Shared Hit Blocks"] + top["Shared Read Blocks"]
        return result

    with connection.execute_wrapper(measure):
        claimed = claim_batch(token=uuid.uuid4(), limit=limit, in_flight=in_flight)
    assert len(claimed) == limit
    return touched


def test_a_claim_reads_as_much_behind_a_backlog_ten_times_larger():
    # given 2,000 pending rows over 1,000 keys
    outbox_rows_bulk(topic="t", keys=1000, per_key=2)
    small = _buffers_read_by_the_claims_selects(limit=500)
    # when the backlog is 20,000 rows over the same keys
    connection.cursor().execute("TRUNCATE outbox_outboxevent")
    outbox_rows_bulk(topic="t", keys=1000, per_key=20)
    large = _buffers_read_by_the_claims_selects(limit=500)
    # then a claim of 500 rows touches about as many pages (an anti-join over every unfinished
    # row, which the planner picks for NOT EXISTS, touches ten times as many)
    assert large <= 2 * small, f"claim of 500 touched {small} buffers at 2,000 pending, {large} at 20,000"


def test_a_claim_reads_as_much_behind_a_backlog_loaded_after_the_last_analyze():
    # given statistics taken on a nearly empty table (a new deployment, or a flood that came
    # in faster than autovacuum analyzes): the planner believes in a handful of rows
    outbox_rows_bulk(topic="t", keys=10, per_key=1)
    connection.cursor().execute("ANALYZE outbox_outboxevent")
    outbox_rows_bulk(topic="t", keys=1000, per_key=2)
    small = _buffers_read_by_the_claims_selects(limit=500, analyze=False)
    # when the backlog is 20,000 rows, still not analyzed
    outbox_rows_bulk(topic="t", keys=1000, per_key=18)
    large = _buffers_read_by_the_claims_selects(limit=500, analyze=False)
    # then a claim of 500 rows touches about as many pages (a hash join of the claim's keys
    # with every pending row, which such statistics invite, touches ten times as many)
    assert large <= 2 * small, f"claim of 500 touched {small} buffers at 2,000 pending, {large} at 20,000"


def _published_below(*, keys: int, per_key: int) -> None:
    """keys x per_key rows already published: a relay's history, older than any pending row."""
    outbox_rows_bulk(topic="t", keys=keys, per_key=per_key)
    connection.cursor().execute("UPDATE outbox_outboxevent SET status = 'published', published_at = now()")


@pytest.mark.django_db(transaction=True)  # the history committed, as a relay's is
def test_a_claim_of_few_keys_reads_as_much_above_a_history_ten_times_longer():
    # given 10 keys with 2,000 published rows, then 1,000 pending ones
    _published_below(keys=10, per_key=200)
    outbox_rows_bulk(topic="t", keys=10, per_key=100)
    small = _buffers_read_by_the_claims_selects(limit=500)
    # when the published history below them is 20,000 rows
    connection.cursor().execute("TRUNCATE outbox_outboxevent")
    _published_below(keys=10, per_key=2000)
    outbox_rows_bulk(topic="t", keys=10, per_key=100)
    large = _buffers_read_by_the_claims_selects(limit=500)
    # then a claim of 500 rows touches about as many pages (a per-key probe planned as a walk
    # of the primary key from the first row reads the whole history, once per candidate). Not
    # quite as many: until a vacuum, the history's old row versions are dead entries at the head
    # of each key in the (key, seq) index of unfinished rows, which each candidate's probe of its
    # key's oldest row steps over (2,890 against 6,657 buffers; 12,846 against 16,466 when each
    # probe looked at every older row of the key)
    assert large <= 3 * small, f"claim of 500 touched {small} buffers above 2,000 published rows, {large} above 20,000"


def _second_claim_behind_the_first_in_flight(*, keys: int, per_key: int) -> int:
    """The buffers of a drain's second claim of 500, its first batch of 500 still in flight."""
    outbox_rows_bulk(topic="t", keys=keys, per_key=per_key)
    connection.cursor().execute("ANALYZE outbox_outboxevent")
    first = uuid.uuid4()
    assert len(claim_batch(token=first, limit=500)) == 500
    return _buffers_read_by_the_claims_selects(limit=500, analyze=False, in_flight=first)


def test_a_claim_of_one_hot_keys_rows_reads_about_as_much_as_one_over_many_keys():
    # given a drain of 1,000 rows over 1,000 keys, its first batch of 500 in flight
    many = _second_claim_behind_the_first_in_flight(keys=1000, per_key=1)
    # when the 1,000 rows are all of one key (a hot product after an outage)
    connection.cursor().execute("TRUNCATE outbox_outboxevent")
    one = _second_claim_behind_the_first_in_flight(keys=1, per_key=1000)
    # then the claim touches about as many pages: each candidate's check that no older row of
    # its key holds it back must not walk every older row of the key (the batch in flight and
    # the candidates before it: 34,639 buffers against 2,592 before, the drain of a hot key
    # eight times slower)
    assert one <= 3 * many, f"second claim of 500 touched {many} buffers over 1,000 keys, {one} over one key"
