"""The quick claim (`claim_quick`, the relay loop's claims after a wake-up): one statement with
the full claim's per-key rule, less the abandoned rows and the fair shares. Checked against a
brute-force model over random tables, against a row another relay is claiming right now, and in
a drain to the real broker."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from outbox.models import OutboxEvent
from outbox.recording import outbox_record
from outbox.relay.claim import QUICK_CLAIM_STATEMENT, claim_quick
from outbox.relay.listen import _listen_connect, _take_notifications, wakeup_first_seq
from outbox.relay.rows import ClaimedRow
from tests.outbox.events_for_tests import SequenceRecorded, outbox_rows_bulk, row_locked_by_another_relay
from tests.outbox.test_claim_fairness_of_keys import (
    LANES,
    claimed_only_what_the_rules_allow,
    keys_held_back_by_their_oldest_row,
    random_table,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.fail("the quick claim is PostgreSQL's (SQLite uses claim_batch): run with DATABASE_URL=postgres://...")


def _expected_quick(rows: list[tuple[int, str, str, str]], *, limit: int, dead_blocks: bool) -> list[int]:
    """Brute force. Rows are (seq, key, topic, state). A key's rows, oldest first, are claimable
    until its first row that must wait: in backoff, under a lease (live or expired: abandoned
    rows are the full claim's), dead when dead rows block. This drain's own rows in flight
    neither wait nor are claimed again. The oldest `limit` claimable rows, whatever their topic."""
    blocked: set[str] = set()
    claimable: list[int] = []
    for seq, key, _, state in sorted(rows):
        if key in blocked:
            continue
        if state in ("backoff", "leased", "expired") or (state == "dead" and dead_blocks):
            blocked.add(key)
        elif state == "due":
            claimable.append(seq)
    return claimable[:limit]


@pytest.mark.parametrize("seed", range(4))
def test_the_quick_claim_equals_a_brute_force_model_on_random_tables(seed, settings):
    _postgresql_only()
    rng = random.Random(seed)
    now = timezone.now()
    settings.KAFKA_TOPICS = {"catalog-events": LANES[0], "order-events": LANES[1]}
    exact = 0
    for _ in range(50):
        dead_blocks = rng.random() < 0.5
        settings.OUTBOX_DEAD_BLOCKS_KEY = dead_blocks
        in_flight = uuid.uuid4()
        # given a table of rows in every state a claim meets
        table = random_table(rng, now=now, in_flight=in_flight)
        limit = rng.randint(1, 12)
        token = uuid.uuid4()
        # when the quick claim runs
        claimed = [row.seq for row in claim_quick(token=token, limit=limit, now=now, in_flight=in_flight)]
        # then it takes only rows the rules allow, each key's without a gap, and leases them to
        # this claim; exactly the model's rows wherever a key held back is held back by its
        # oldest unfinished row (test_claim_fairness_of_keys.py has why)
        blockers = ("backoff", "leased", "expired", "dead") if dead_blocks else ("backoff", "leased", "expired")
        assert claimed_only_what_the_rules_allow(table, claimed, blockers=blockers), (table, limit)
        expected = _expected_quick(table, limit=limit, dead_blocks=dead_blocks)
        assert set(claimed) <= set(expected), (table, limit, dead_blocks)
        leased = OutboxEvent.objects.filter(claim_token=token).values_list("seq", flat=True)
        assert sorted(leased) == claimed
        if keys_held_back_by_their_oldest_row(table, blockers=blockers):
            exact += 1
            assert claimed == expected, (table, limit, dead_blocks)
    assert exact >= 20, f"only {exact} of 50 tables checked against the model"


def test_the_quick_claim_leaves_a_key_whose_oldest_row_another_relay_is_claiming():
    _postgresql_only()
    # given another relay in the middle of its claim: it holds the lock on key 1's oldest row
    outbox_rows_bulk(topic="t", keys=2, per_key=3)
    oldest = OutboxEvent.objects.filter(key="1").earliest("seq").seq
    with row_locked_by_another_relay(oldest):
        # when this relay's quick claim runs
        claimed = claim_quick(token=uuid.uuid4(), limit=100)
    # then it takes key 2's rows only: key 1's later rows must wait for the locked one
    assert [(row.key, row.payload["sequence"]) for row in claimed] == [("2", 0), ("2", 1), ("2", 2)]


def test_the_quick_claim_behind_a_backlog_is_not_compiled_by_jit():
    _postgresql_only()
    # given a backlog of 30,000 rows, analyzed: the planner's estimate for the quick claim
    # crosses jit_above_cost (PostgreSQL would spend 200 ms compiling a claim of 10 ms)
    for _ in range(3):
        outbox_rows_bulk(topic="t", keys=1000, per_key=10)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE outbox_outboxevent")
    plans: list[dict] = []

    def explain(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("EXECUTE"):  # the prepared claim (OUTBOX_CLAIM_PREPARED)
            statement = sql
        elif "WITH candidate" in sql and not sql.startswith(("EXPLAIN", "PREPARE")):
            statement = sql[sql.index("WITH candidate") :]
        else:
            return result
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            (plan,) = cursor.fetchone()
            plans.append(json.loads(plan)[0] if isinstance(plan, str) else plan[0])
            transaction.set_rollback(True)
        return result

    # when the relay loop's quick claim runs in its session, six times (a prepared statement
    # may switch to a generic plan after five)
    with connection.execute_wrapper(explain):
        claimed = [claim_quick(token=uuid.uuid4(), limit=500) for _ in range(6)]
    # then it ran as planned, without compiling it, each time (the first row of each of the
    # 1,000 keys, leased, holds its key's later rows back)
    assert [len(rows) for rows in claimed] == [500, 500, 0, 0, 0, 0]
    assert [plan.get("JIT") for plan in plans] == [None] * 6


def _blocked_backlog(*, keys: int, per_key: int) -> None:
    """keys x per_key pending rows, each key held back by its oldest row, in backoff (a send that
    failed): nothing of it is claimable."""
    outbox_rows_bulk(topic="t", keys=keys, per_key=per_key)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE outbox_outboxevent SET attempts = 1, available_at = now() + interval '10 minutes' "
            "WHERE seq IN (SELECT min(seq) FROM outbox_outboxevent GROUP BY key)"
        )
        cursor.execute("ANALYZE outbox_outboxevent")


def _buffers_of_a_wake_up() -> tuple[list[str], int]:
    """One event committed as a service commits it, then the relay loop's claim for the wake-up
    it hears; returns (the keys claimed, the buffers the claim touched: shared hit + read, by
    EXPLAIN ANALYZE of the same statement, rolled back)."""
    listener = _listen_connect("default")
    try:
        with transaction.atomic():
            outbox_record(event=SequenceRecorded(product_id=f"new-{uuid.uuid4().hex[:6]}", sequence=0))
        deadline = time.monotonic() + 5
        while not (heard := _take_notifications(listener)) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        listener.close()
    claimed, touched = _quick_claim_buffers(
        lambda: claim_quick(token=uuid.uuid4(), limit=500, from_seq=wakeup_first_seq(heard))
    )
    return [row.key for row in claimed], touched


def _quick_claim_buffers(claim: Callable[[], list[ClaimedRow]]) -> tuple[list[ClaimedRow], int]:
    """Run `claim`; return its rows and the buffers its quick claims touched (shared hit + read,
    by EXPLAIN ANALYZE of the same statement right before it, rolled back)."""
    touched = 0

    def measure(execute, sql, params, many, context):
        nonlocal touched
        if sql.startswith("EXECUTE") or ("WITH candidate" in sql and not sql.startswith(("EXPLAIN", "PREPARE"))):
            statement = sql if sql.startswith("EXECUTE") else sql[sql.index("WITH candidate") :]
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
                (plan,) = cursor.fetchone()
                top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
                touched += top["Shared Hit Blocks"] + top["Shared Read Blocks"]
                transaction.set_rollback(True)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(measure):
        claimed = claim()
    return claimed, touched


def test_a_wake_up_claim_reads_as_much_behind_a_blocked_backlog_ten_times_larger():
    _postgresql_only()
    # given 2,000 pending rows over 1,000 keys, each key held back by a failed row in backoff
    _blocked_backlog(keys=1000, per_key=2)
    small_keys, small = _buffers_of_a_wake_up()
    # when the backlog is 20,000 such rows
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE outbox_outboxevent")
    _blocked_backlog(keys=1000, per_key=20)
    large_keys, large = _buffers_of_a_wake_up()
    # then the claim for a commit heard takes what committed, reading about as many pages (a
    # claim that scans from the oldest pending row reads the whole backlog on every wake-up:
    # 790 ms a claim at 100,000 such rows)
    assert [key.startswith("new-") for key in small_keys + large_keys] == [True, True]
    assert large <= 2 * small, f"wake-up claim touched {small} buffers at 2,000 blocked rows, {large} at 20,000"


def _prepared_claims() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = %s", [QUICK_CLAIM_STATEMENT])
        (count,) = cursor.fetchone()
    return count


class _Statements:
    """Counts the statements of this connection that start with a word (PREPARE, EXECUTE)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.seen.append(sql.split(None, 1)[0].upper())
        return execute(sql, params, many, context)

    def count(self, word: str) -> int:
        return self.seen.count(word)


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "planned-each-time"])
def test_the_quick_claim_is_prepared_once_per_session_unless_turned_off(prepared, settings):
    _postgresql_only()
    # given rows to claim, and OUTBOX_CLAIM_PREPARED on (the default) or off (a pooler)
    settings.OUTBOX_CLAIM_PREPARED = prepared
    outbox_rows_bulk(topic="t", keys=8, per_key=1)
    connection.close()  # a session of its own: no statement prepared in it yet
    statements = _Statements()
    # when the relay loop claims on every wake-up
    with connection.execute_wrapper(statements):
        claimed = [claim_quick(token=uuid.uuid4(), limit=2) for _ in range(3)]
    # then each claim took its rows, from a statement prepared once when on, never when off
    assert [len(rows) for rows in claimed] == [2, 2, 2]
    assert statements.count("PREPARE") == (1 if prepared else 0)
    assert statements.count("EXECUTE") == (3 if prepared else 0)
    assert _prepared_claims() == (1 if prepared else 0)
    # and a setting that changes the statement's text prepares it again, in the same session
    settings.OUTBOX_DEAD_BLOCKS_KEY = not settings.OUTBOX_DEAD_BLOCKS_KEY
    with connection.execute_wrapper(statements):
        assert len(claim_quick(token=uuid.uuid4(), limit=1)) == 1
    assert statements.count("PREPARE") == (2 if prepared else 0)
    assert _prepared_claims() == (1 if prepared else 0)


def test_a_session_that_lost_the_prepared_claim_prepares_it_again():
    _postgresql_only()
    # given a session whose quick claim is prepared
    outbox_rows_bulk(topic="t", keys=4, per_key=1)
    assert len(claim_quick(token=uuid.uuid4(), limit=1)) == 1
    # when something drops it (DISCARD ALL or DEALLOCATE ALL: a pooler, an operator)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    # then the next claims still claim, from the statement prepared again
    assert len(claim_quick(token=uuid.uuid4(), limit=1)) == 1
    assert len(claim_quick(token=uuid.uuid4(), limit=1)) == 1
    assert _prepared_claims() == 1
    # and a new session (a reconnection) prepares its own
    connection.close()
    assert len(claim_quick(token=uuid.uuid4(), limit=1)) == 1
    assert _prepared_claims() == 1


def test_a_drain_with_quick_claims_publishes_every_row_once_in_key_order(kafka_topics):
    _postgresql_only()
    from outbox.relay import relay_drain
    from tests.support.kafka import kafka_read_all

    # given 5 keys x 40 rows, and the oldest row of key 3 in backoff (its key must wait)
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=5, per_key=40)
    held = OutboxEvent.objects.filter(key="3").earliest("seq").seq
    OutboxEvent.objects.filter(seq=held).update(attempts=1, available_at=timezone.now() + timedelta(minutes=5))
    # when one drain runs with quick claims, in batches of 7 (full ones: then claim_batch)
    result = relay_drain(batch_size=7, quick_claims=True)
    # then every other row is published once, in per-key order, and key 3 waits whole
    assert result.published == 160
    assert set(OutboxEvent.objects.filter(status="pending").values_list("key", flat=True)) == {"3"}
    records = kafka_read_all(topic, expected=160, timeout_s=30)
    assert len(records) == len({r.headers["event_id"] for r in records}) == 160
    sequences: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        sequences.setdefault((record.key or b"").decode(), []).append(json.loads(record.value)["sequence"])
    assert sequences == {key: list(range(40)) for key in ("1", "2", "4", "5")}


def _buffers_of_a_second_quick_claim(*, keys: int, per_key: int) -> int:
    """The buffers (shared hit + read, by EXPLAIN ANALYZE of the same statement, rolled back) of
    a drain's second quick claim of 500, its first batch of 500 still in flight."""
    outbox_rows_bulk(topic="t", keys=keys, per_key=per_key)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE outbox_outboxevent")
    first = uuid.uuid4()
    assert len(claim_quick(token=first, limit=500)) == 500
    claimed, touched = _quick_claim_buffers(lambda: claim_quick(token=uuid.uuid4(), limit=500, in_flight=first))
    assert len(claimed) == 500
    return touched


def test_a_quick_claim_of_one_hot_keys_rows_reads_about_as_much_as_one_over_many_keys():
    _postgresql_only()
    # given a backlog of 20,000 rows over as many keys (a table the planner reads by its
    # indexes, as a production outbox), a drain's first batch of 500 in flight
    many = _buffers_of_a_second_quick_claim(keys=20_000, per_key=1)
    # when the 20,000 rows are all of one key (a hot product after an outage)
    connection.cursor().execute("TRUNCATE outbox_outboxevent")
    one = _buffers_of_a_second_quick_claim(keys=1, per_key=20_000)
    # then the claim touches about as many pages: its per-key checks must not walk every older
    # row of the key for each candidate (quadratic in the rows of a key in the claim: 907,057
    # buffers against 6,091 on the code before)
    assert one <= 3 * many, f"second quick claim of 500 touched {many} buffers over 20,000 keys, {one} over one key"
