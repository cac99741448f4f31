"""Claim: pick the next rows this relay may send and lease them, in one short transaction.

A row is claimable when it is pending, due, not under a live lease, and no older row of its key
must be waited for: one in backoff, one under another relay's live lease, or a dead one when
`OUTBOX_DEAD_BLOCKS_KEY`. That per-key filter is in the SQL: the scan for candidates skips the
keys whose oldest unfinished row holds them back (a `LIMIT 1` subquery, served by the `(key, seq)`
index on unfinished rows), so a claim of N returns min(N, claimable rows) however many rows the
blocked keys hold; then one probe per key drops the key's candidates from its oldest row left out
of the claim, which alone decides what is leased. A key whose blocker is behind its oldest row
(a row requeued from dead, a late commit) gets past the scan: the full claim then scans once
more without such keys; a quick claim comes back short, and the rest waits for the next drain.
Rows of this drain's own batch in flight (`in_flight`) do not hold their keys back: the producer
has them ahead of anything claimed now.

A row that still holds a lease token once its lease expired was *abandoned*: its relay died (or
outlived its lease) holding it, perhaps killed by sending it. The claim counts that as an attempt,
marks the row dead once that makes `OUTBOX_MAX_ATTEMPTS`, and takes it in a batch of its own (a
batch ends before an abandoned row), so that a row that kills its relay takes no other row down
with it; the drain sends such a batch only once its batches before are written back (drain.py).
docs/OUTBOX.md, "Claim", has the whole protocol.
"""

from __future__ import annotations

import contextlib
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import F, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from outbox.models import OutboxEvent
from outbox.relay.rows import SEND_FIELDS, ClaimedRow, outbox_column, pg_int_array, unfinished_statuses

_TABLE = OutboxEvent._meta.db_table

# A candidate row as the claim's SELECT returns it: seq, key, whether it holds a lease token
# (lapsed), attempts.
Candidate = tuple[int, str, bool, int]


# The older rows of o's key: `b.seq < o.seq` alone lets the planner walk the primary key from the
# table's first row, through every published row, when it expects a match soon (few keys, a
# LIMIT 1); the row comparison bounds the (key, seq) index to o's key.
_KEY_PROBE = "{b}.key = {o}.key AND ({b}.key, {b}.seq) < ({o}.key, {o}.seq)"

# The same rows, in row comparisons only, for a probe ordered by (key, seq): with `b.key = o.key`
# the planner knows the key is fixed, orders by seq alone, and walks the primary key instead,
# through every published row (660 ms a claim on a hot key). Seqs are positive.
_KEY_RANGE = "({b}.key, {b}.seq) > ({o}.key, 0) AND ({b}.key, {b}.seq) < ({o}.key, {o}.seq)"


def _head_blocks_sql(*, claimable: str, unfinished: str, not_ours: str) -> str:
    """Whether the oldest unfinished row of o's key holds o back: a row in backoff, under another
    relay's lease, dead when dead rows block (a row of this drain's batch in flight does not).
    One index entry per candidate: where a key is held back, that row is the one holding it (its
    later rows were never sent, or were released behind it). Looking at every older row instead
    walks the key's rows for each candidate: quadratic on a hot key (500 x 750 index entries a
    claim of 500 behind a batch in flight, its drain eight times slower than over many keys).
    The exact per-key rule is applied after (a key's rows from its oldest row left out are not
    leased); this check keeps the rows of keys held back out of the limit. NULL: none older."""
    return (
        "(SELECT NOT (" + claimable.format(t="b") + f") AND {not_ours} FROM {_TABLE} b "
        f"WHERE {_KEY_RANGE.format(b='b', o='o')} AND {unfinished} ORDER BY b.key, b.seq LIMIT 1)"
    )


def _blocking_statuses_sql() -> str:
    # Literals from code, never user input: constants keep the statement's plan independent
    # of the setting's value.
    return ", ".join(f"'{status}'" for status in unfinished_statuses())


def _candidates_sql(*, lock: str, topic: bool = False, exclude: str = "") -> str:
    """The claimable rows, oldest first (of one topic if `topic`). `b` is an older row of the same
    key that makes `o` wait: unfinished, and neither due-and-unleased (then it is claimed before
    `o`, in this claim) nor in this drain's batch in flight. Named `%(...)s` parameters: now,
    in_flight, limit, and topic."""
    claimable = (
        "{t}.status = 'pending' AND {t}.available_at <= %(due)s "
        "AND ({t}.claim_expires_at IS NULL OR {t}.claim_expires_at < %(now)s)"
    )
    return (
        f"SELECT o.seq, o.key, o.claim_token IS NOT NULL, o.attempts FROM {_TABLE} o WHERE "
        + claimable.format(t="o")
        + (" AND o.topic = %(topic)s" if topic else "")
        + exclude
        # A scalar subquery with LIMIT 1, not NOT EXISTS: the planner may turn a NOT EXISTS into
        # an anti-join that reads every unfinished row once per claim (a Materialize of the
        # whole (key, seq) index: 16 ms a claim at 30,000 pending rows, whatever the statistics
        # say); a subquery stays one probe of that index per candidate.
        # lower(): the statuses that block, written so that they do not imply status =
        # 'pending' (see _pg_claim: a probe must use the (key, seq) index, never the pending one).
        + " AND "
        + _head_blocks_sql(
            claimable=claimable,
            unfinished=f"b.status <> 'published' AND lower(b.status) IN ({_blocking_statuses_sql()})",
            not_ours="(b.claim_token IS NULL OR b.claim_token <> %(in_flight)s)",
        )
        + " IS NOT TRUE"
        f" ORDER BY o.seq LIMIT %(limit)s {lock}"
    )


def _lanes() -> list[str]:
    """The topics that get a fair share of each claim (`OUTBOX_FAIR_SHARE`): the configured
    topics, when there are several."""
    topics = sorted(set(settings.KAFKA_TOPICS.values()))
    return topics if settings.OUTBOX_FAIR_SHARE and len(topics) > 1 else []


def _fair_candidates(
    cursor: CursorWrapper, *, limit: int, params: dict[str, Any], lock: str, skip: str = ""
) -> list[Candidate]:
    """Up to `limit` claimable rows, oldest first: first up to an equal share for each topic
    (so that a flood on one topic cannot push another's events behind it), then the oldest
    of any topic to fill the batch. `skip`: SQL conditions on `o` that every scan adds."""
    picked: list[Candidate] = []
    lanes = _lanes()
    share = max(1, limit // len(lanes)) if lanes else 0
    last_of_lane: dict[str, int] = {}
    for topic in lanes:
        cursor.execute(
            _candidates_sql(lock=lock, topic=True, exclude=skip),
            {**params, "topic": topic, "limit": min(share, limit - len(picked))},
        )
        rows = cursor.fetchall()
        if rows:
            last_of_lane[topic] = rows[-1][0]
        picked.extend(rows)
        if len(picked) >= limit:
            break
    if len(picked) < limit:
        # The fill skips what each topic's share already went through: up to its last row
        # taken, a topic's claimable rows are all in the claim. Plain comparisons, evaluated
        # before the per-key check, so the rows already scanned cost no second probe.
        exclude = skip
        extra: dict[str, str | int] = {}
        for n, (topic, last) in enumerate(last_of_lane.items()):
            exclude += f" AND (o.topic <> %(lane{n})s OR o.seq > %(last{n})s)"
            extra.update({f"lane{n}": topic, f"last{n}": last})
        cursor.execute(_candidates_sql(lock=lock, exclude=exclude), {**params, **extra, "limit": limit - len(picked)})
        picked.extend(cursor.fetchall())
    picked.sort()
    return picked


def _claimable_candidates(
    cursor: CursorWrapper,
    *,
    limit: int,
    params: dict[str, Any],
    lock: str,
    without: Callable[[list[Candidate]], list[int]],
) -> list[Candidate]:
    """The claim's rows, oldest first: the scan's candidates (`_fair_candidates`) that `without`,
    the exact per-key check, keeps (it returns their seqs); topped up once from other keys when
    it dropped some (`_candidates_without_held_keys`)."""
    candidates = _fair_candidates(cursor, limit=limit, params=params, lock=lock)
    free = set(without(candidates))
    held = sorted({key for seq, key, *_ in candidates if seq not in free})
    if held and len(free) < limit:
        candidates += _candidates_without_held_keys(
            cursor, candidates, free=free, held=held, limit=limit, params=params, lock=lock
        )
        candidates = [c for c in sorted(candidates) if c[0] in free or c[1] not in held]
        free = set(without(candidates))
    return [candidate for candidate in candidates if candidate[0] in free]


def _candidates_without_held_keys(
    cursor: CursorWrapper,
    candidates: list[Candidate],
    *,
    free: set[int],
    held: list[str],
    limit: int,
    params: dict[str, Any],
    lock: str,
) -> list[Candidate]:
    """More candidates, up to the limit, from keys other than `held`.

    Rows of `held` keys were dropped by the per-key check: held back by a row behind their key's
    oldest one, which the scan's probe does not look at (a row requeued from dead, a late commit
    left such a key). They took places in the limit, or a topic's share: the scan runs once more
    without those keys, so that they do not starve the others. The caller checks the whole claim
    again (the per-key check runs over every row it keeps)."""
    taken = [seq for seq, *_ in candidates]
    if connection.vendor == "postgresql":
        skip = " AND o.key <> ALL(%(held)s::text[]) AND NOT (o.seq = ANY(%(taken)s::bigint[]))"
        extra: dict[str, Any] = {"held": held, "taken": pg_int_array(taken)}
    else:
        extra = {f"held{n}": key for n, key in enumerate(held)} | {f"taken{n}": seq for n, seq in enumerate(taken)}
        skip = (
            " AND o.key NOT IN (" + ", ".join(f"%(held{n})s" for n in range(len(held))) + ")"
            " AND o.seq NOT IN (" + ", ".join(f"%(taken{n})s" for n in range(len(taken))) + ")"
        )
    return _fair_candidates(cursor, limit=limit - len(free), params={**params, **extra}, lock=lock, skip=skip)


def claim_batch(
    *,
    token: uuid.UUID,
    limit: int,
    now: datetime | None = None,
    in_flight: uuid.UUID | None = None,
    min_age_s: float = 0.0,
) -> list[ClaimedRow]:
    """Claim up to `limit` rows for this relay (token `token`), oldest first. Commits on return.

    `in_flight` is the token of this drain's batch that is sent but not yet written back.
    `min_age_s`: only rows due for at least that long (the Celery beat drain beside a relay
    loop: what just committed is the loop's, tasks.py).
    """
    # No batch in flight: a token no row holds keeps the SQL free of NULL comparisons.
    in_flight = in_flight or uuid.uuid4()
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        return _pg_claim_own_transaction(token=token, limit=limit, now=now, min_age_s=min_age_s, in_flight=in_flight)
    with transaction.atomic():
        if connection.vendor == "postgresql":  # in a caller's transaction: a savepoint of it
            with connection.cursor() as cursor:
                return _pg_claim(cursor, token=token, limit=limit, now=now, min_age_s=min_age_s, in_flight=in_flight)
        # SQLite: one host, one drain at a time (sqlite_lock.py): the host's clock is the clock.
        now = now or timezone.now()
        return _sqlite_claim(
            token=token,
            limit=limit,
            now=now,
            due=now - timedelta(seconds=min_age_s),
            in_flight=in_flight,
            expires=now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL),
        )


ABANDONED = "the relay died (or outlived its lease) while holding this row"


@dataclass(frozen=True)
class _Settled:
    """What the claim does with its candidates: lease `kept` (the abandoned ones among them get
    an attempt), mark `doomed` dead (abandoned once too often)."""

    kept: list[int]
    abandoned: list[int]
    doomed: list[int]


def _settle(candidates: list[tuple[int, str, bool, int]]) -> _Settled:
    """candidates: (seq, key, abandoned, attempts) of the claimable rows, oldest first."""
    kept: list[int] = []
    abandoned: list[int] = []
    doomed: list[int] = []
    dead_keys: set[str] = set()
    for seq, key, was_abandoned, attempts in candidates:
        if key in dead_keys:
            continue  # behind a row marked dead now, while dead rows block their key
        if was_abandoned and attempts + 1 >= settings.OUTBOX_MAX_ATTEMPTS:
            doomed.append(seq)
            if settings.OUTBOX_DEAD_BLOCKS_KEY:
                dead_keys.add(key)
            continue
        if was_abandoned:
            # A suspect row is a batch of its own: if it kills this relay too, it dies alone.
            # Behind other rows it ends the batch before it, and comes first in the next claim.
            if not kept:
                kept.append(seq)
                abandoned.append(seq)
            break
        kept.append(seq)
    return _Settled(kept, abandoned, doomed)


def _flag_abandoned(rows: list[ClaimedRow], abandoned: list[int]) -> list[ClaimedRow]:
    for row in rows:
        row.abandoned = row.seq in abandoned
    return rows


def _dead_reason(attempts: int | str) -> str:
    return f"{ABANDONED} {attempts} times (OUTBOX_MAX_ATTEMPTS={settings.OUTBOX_MAX_ATTEMPTS}): marked dead at claim"


# --- PostgreSQL: plain SQL with array parameters, one statement per step whatever the batch size
# (an `IN` list of 2,000 placeholders costs more to build and parse than the rows cost to read).


def _pg_claim_own_transaction(
    *, token: uuid.UUID, limit: int, now: datetime | None, min_age_s: float, in_flight: uuid.UUID
) -> list[ClaimedRow]:
    """The claim in a transaction its own statements begin and end: BEGIN goes with its first
    statement, COMMIT with its last (the lease), in the same round trips. `transaction.atomic()`
    sends each on its own, two more round trips a claim, and every round trip of the drain's
    thread waits for the GIL while the sender thread holds it (up to a switch interval, 5 ms:
    docs/BENCHMARKS.md). Whatever fails in between is rolled back here (or by the server, when
    the session is gone); the connection is back in autocommit, outside any transaction."""
    with connection.cursor() as cursor:
        try:
            return _pg_claim(
                cursor, token=token, limit=limit, now=now, min_age_s=min_age_s, in_flight=in_flight, own=True
            )
        except BaseException:
            with contextlib.suppress(DatabaseError, InterfaceError):  # a lost session rolled back by itself
                cursor.execute("ROLLBACK")
            raise


def _pg_claim(
    cursor: CursorWrapper,
    *,
    token: uuid.UUID,
    limit: int,
    now: datetime | None,
    min_age_s: float,
    in_flight: uuid.UUID,
    own: bool = False,
) -> list[ClaimedRow]:
    """The claim's statements; `own`: in a transaction they begin and end themselves
    (`_pg_claim_own_transaction`), else in the caller's."""
    # The claim's one right plan: ordered index scans that stop at the limit, each per-key
    # probe an index range of its key. On a table never analyzed (a fresh deployment, a
    # bulk load) the planner estimates a handful of rows and may instead sort every pending
    # row and probe with a bitmap of the whole pending index: quadratic, minutes at 20,000
    # rows (seen in the concurrent-relays test). For this transaction only.
    # JIT off: the planner cannot tell that the ordered scans stop at the limit, estimates
    # the per-key probes over the whole backlog, and would compile the claim (150 ms) to
    # save microseconds.
    # set_config(..., true) is SET LOCAL. In the same round trip, the database's clock: every
    # relay's leases and due times read one clock, whatever its host's says (a relay whose
    # clock ran ahead would take over live leases; one behind would leave due rows waiting).
    cursor.execute(
        ("BEGIN; " if own else "")
        + "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), "
        "set_config('enable_sort', 'off', true), set_config('jit', 'off', true), statement_timestamp()"
    )
    if own:
        cursor.nextset()  # past BEGIN's empty result
    database_now = cursor.fetchone()[-1]
    now = now or database_now
    due = now - timedelta(seconds=min_age_s)
    expires = now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL)
    # SKIP LOCKED: concurrent relays take disjoint rows. The partial indexes on pending rows
    # by seq (and by topic, seq) yield them oldest first: each scan stops after its limit.
    params = {"now": now, "due": due, "in_flight": in_flight}
    lock = "FOR UPDATE OF o SKIP LOCKED"
    settled = _settle(
        _claimable_candidates(
            cursor,
            limit=limit,
            params=params,
            lock=lock,
            without=lambda candidates: _pg_without_rows_another_relay_is_claiming(
                cursor, [(seq, key) for seq, key, _, _ in candidates], in_flight=in_flight
            ),
        )
    )
    if settled.doomed:
        cursor.execute(
            f"UPDATE {_TABLE} SET status = 'dead', attempts = attempts + 1, "
            "last_error = format(%(reason)s, attempts + 1), "
            "claim_token = NULL, claim_expires_at = NULL WHERE seq = ANY(%(doomed)s)",
            {"doomed": settled.doomed, "reason": _dead_reason("%s")},
        )
    if not settled.kept:
        if own:
            cursor.execute("COMMIT")
        return []
    rows = _pg_lease(cursor, settled.kept, abandoned=settled.abandoned, token=token, expires=expires, commit=own)
    return _flag_abandoned(rows, settled.abandoned)


def _pg_without_rows_another_relay_is_claiming(
    cursor: CursorWrapper,
    candidates: list[tuple[int, str]],
    *,
    in_flight: uuid.UUID,
) -> list[int]:
    """The candidates, less the rows of a key whose older row is outside this claim.

    It alone decides which candidates are leased (the scan looked at each key's oldest unfinished
    row only): a row outside the claim is one another relay is claiming right now (skipped by
    SKIP LOCKED, it still reads as claimable), a row of the same key on another topic beyond that
    topic's share, or a row that must be waited for behind the key's oldest one. One probe of the
    (key, seq) index per key picked, from its oldest unfinished row up to its last row picked,
    that returns the first row outside this claim: nearly always none.
    """
    if not candidates:
        return []
    picked = [seq for seq, _ in candidates]
    last_of_key = {key: seq for seq, key in candidates}
    # A scalar subquery per key: it cannot be planned as a join. As a join, statistics taken
    # before a backlog came in (a handful of rows) invite a hash join of the keys with every
    # pending row: a read of the whole backlog on every claim. Its bound is the row comparison
    # `(key, seq) < (k.key, k.last)`, which only the (key, seq) index can serve (`_KEY_PROBE`),
    # and `min(seq + 0)`, which PostgreSQL cannot turn into an ordered scan of the primary key
    # that walks every row below k.last, published ones included.
    # lower(): the statuses that block, written so that they do not imply the pending indexes'
    # predicate (the probe must be of the (key, seq) index, as in _candidates_sql).
    cursor.execute(
        f"SELECT k.key, (SELECT min(o.seq + 0) FROM {_TABLE} o WHERE o.key = k.key "
        "AND (o.key, o.seq) < (k.key, k.last) "
        f"AND o.status <> 'published' AND lower(o.status) IN ({_blocking_statuses_sql()}) "
        "AND NOT (o.seq = ANY(%(picked)s::bigint[])) "
        "AND (o.claim_token IS NULL OR o.claim_token <> %(in_flight)s)) "
        "FROM unnest(%(keys)s::text[], %(lasts)s::bigint[]) AS k(key, last)",
        {
            "keys": list(last_of_key),
            "lasts": pg_int_array(list(last_of_key.values())),
            "picked": pg_int_array(picked),
            "in_flight": in_flight,
        },
    )
    first_outside = {key: seq for key, seq in cursor.fetchall() if seq is not None}
    return [seq for seq, key in candidates if seq < first_outside.get(key, seq + 1)]


def _pg_lease(
    cursor: CursorWrapper,
    kept: list[int],
    *,
    abandoned: list[int],
    token: uuid.UUID,
    expires: datetime,
    commit: bool = False,
) -> list[ClaimedRow]:
    """Lease the kept rows; `commit`: and end the claim's own transaction in the same round trip
    (the UPDATE's rows are its first result)."""
    if abandoned:
        cursor.execute(
            f"UPDATE {_TABLE} SET attempts = attempts + 1, last_error = %(reason)s WHERE seq = ANY(%(abandoned)s)",
            {"abandoned": abandoned, "reason": ABANDONED},
        )
    cursor.execute(
        f"UPDATE {_TABLE} SET claim_token = %(token)s, claim_expires_at = %(expires)s "
        f"WHERE seq = ANY(%(kept)s::bigint[]) RETURNING {_RETURNING}" + ("; COMMIT" if commit else ""),
        {"token": token, "expires": expires, "kept": pg_int_array(kept)},
    )
    return _claimed_rows(cursor.fetchall())


# Text columns where the header wants text: converting 2,000 uuids and timestamps to Python
# objects and back costs as much as the update itself.
_RETURNING = (
    "seq, id::text, topic, key, type, event_version, aggregatetype, aggregateid, aggregate_version, "
    "headers::text, replace(to_char(occurred_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '.000000Z', 'Z'), attempts, payload::text"
)


# `seq` and `key` are also the CTE's columns in `claim_quick`'s UPDATE ... FROM.
_RETURNING_QUALIFIED = _RETURNING.replace("seq, id::text, topic, key,", f"{_TABLE}.seq, id::text, topic, {_TABLE}.key,")


def _claimed_rows(fetched: list[tuple[Any, ...]]) -> list[ClaimedRow]:
    rows = [
        ClaimedRow(
            seq,
            event_id,
            topic,
            key,
            type_,
            version,
            aggregatetype,
            aggregateid,
            aggregate_version,
            headers,
            occurred_at,
            attempts,
            payload,
        )
        for (
            seq,
            event_id,
            topic,
            key,
            type_,
            version,
            aggregatetype,
            aggregateid,
            aggregate_version,
            headers,
            occurred_at,
            attempts,
            payload,
        ) in fetched
    ]
    rows.sort(key=lambda row: row.seq)
    return rows


# --- The quick claim (PostgreSQL): one statement, for a drain woken by a commit.


def claim_quick(
    *,
    token: uuid.UUID,
    limit: int,
    now: datetime | None = None,
    in_flight: uuid.UUID | None = None,
    from_seq: int | None = None,
) -> list[ClaimedRow]:
    """Claim up to `limit` claimable rows, oldest first, in one statement in autocommit.

    The relay loop's claims after a wake-up: one round trip, where `claim_batch` takes six or
    seven (its transaction, the planner settings, a scan per topic and the fill, the check for
    rows another relay is claiming, the lease). The same per-key rule, in one statement: the
    candidates are locked (SKIP LOCKED) in a CTE, and a candidate is leased only when every
    older unfinished row of its key is either a candidate too or in this drain's batch in flight
    (an older row skipped because another relay is claiming it right now, a row of an expired
    lease, a row in backoff: each holds its key's later rows back). It does less than
    `claim_batch`:

    - no row that still holds a lease token: abandoned rows are `claim_batch`'s (it counts their
      attempts and sends them alone), taken by the loop's next poll drain;
    - no fair share between topics: a claim that comes back full means a backlog, and the drain
      goes on with `claim_batch` (drain.py);
    - with `from_seq` (the lowest seq the wake-up's notifications name), no row older than it:
      the scan starts there, so a backlog of rows held back by their keys (a failed row in
      backoff at the head of each) is not read again on every wake-up. Such rows, and any row
      committed without a notification heard, are the full drains' (every poll interval). The
      per-key rule still looks at every older row of each key in the claim (once per key).

    On SQLite it is `claim_batch`.
    """
    if connection.vendor != "postgresql":
        return claim_batch(token=token, limit=limit, now=now, in_flight=in_flight)
    in_flight = in_flight or uuid.uuid4()
    unfinished = f"b.status <> 'published' AND lower(b.status) IN ({_blocking_statuses_sql()})"
    not_ours = "(b.claim_token IS NULL OR b.claim_token <> %(in_flight)s)"
    # The database's clock (statement_timestamp()), as in `claim_batch`: one clock for every
    # relay. `now` only where a caller passes one (tests), in a statement text of its own: the
    # production statement reads the clock directly, with no parameter that is always null.
    database_now = "statement_timestamp()" if now is None else "%(now)s::timestamptz"
    # What this claim may take: pending, due and holding no lease token (live or expired).
    claimable = "{t}.status = 'pending' AND {t}.available_at <= " + database_now + " AND {t}.claim_token IS NULL"
    # The per-key checks are scalar subqueries, not NOT EXISTS: the planner cannot turn them into
    # anti-joins over the whole table (what `claim_batch` prevents with its SET LOCALs, two more
    # round trips here); each stays a probe of the (key, seq) index. The first, per candidate,
    # skips keys whose oldest unfinished row holds them back (so the limit is spent on rows it
    # can take: a blocked key never stalls the others; `_head_blocks_sql`). The second, once per
    # key of the claim, finds the key's oldest row left out (another relay is claiming it, it is
    # in backoff, under a lease, ...): the key's candidates from that row on are not leased.
    # Either one per candidate over every older row is quadratic in the rows of a key in the
    # claim (a hot key: 71,000 buffers a claim of 500 against 5,000 over as many keys).
    # `min(seq + 0)`: never an ordered walk of the primary key below k.last.
    sql = (
        f"WITH candidate AS MATERIALIZED (SELECT o.seq, o.key FROM {_TABLE} o "
        "WHERE "
        + claimable.format(t="o")
        + " AND o.seq >= %(from_seq)s AND "
        + _head_blocks_sql(claimable=claimable, unfinished=unfinished, not_ours=not_ours)
        + " IS NOT TRUE ORDER BY o.seq LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED), "
        "left_out AS MATERIALIZED (SELECT k.key, "
        f"(SELECT min(b.seq + 0) FROM {_TABLE} b WHERE b.key = k.key AND (b.key, b.seq) < (k.key, k.last) "
        f"AND {unfinished} AND {not_ours} AND b.seq NOT IN (SELECT seq FROM candidate)) AS seq "
        "FROM (SELECT key, max(seq) AS last FROM candidate GROUP BY key) k) "
        f"UPDATE {_TABLE} SET claim_token = %(token)s, "
        f"claim_expires_at = {database_now} + make_interval(secs => %(ttl_s)s) "
        f"FROM candidate c JOIN left_out l ON l.key = c.key WHERE {_TABLE}.seq = c.seq "
        "AND (l.seq IS NULL OR c.seq < l.seq) "
        f"RETURNING {_RETURNING_QUALIFIED}"
    )
    params: dict[str, Any] = {
        "token": token,
        "ttl_s": settings.OUTBOX_CLAIM_TTL,
        "now": now,
        "in_flight": in_flight,
        "limit": limit,
        "from_seq": from_seq or 0,
    }
    if connection.in_atomic_block or not settings.OUTBOX_CLAIM_PREPARED:
        # (In a transaction, SET LOCAL: a SET or a PREPARE it rolled back would be undone.)
        with connection.cursor() as cursor:
            cursor.execute(("SET LOCAL jit = off; " if connection.in_atomic_block else "SET jit = off; ") + sql, params)
            cursor.nextset()
            return _claimed_rows(cursor.fetchall())
    arguments = ", ".join(f"%({name})s" for name in _QUICK_CLAIM_PARAMETERS)
    for last_try in (False, True):
        _quick_claim_prepared(sql)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"EXECUTE {QUICK_CLAIM_STATEMENT}({arguments})", params)
                return _claimed_rows(cursor.fetchall())
        except DatabaseError as exc:
            # The session lost the statement (DISCARD ALL, DEALLOCATE ALL by a pooler or an
            # operator): prepare it again and claim once more. Autocommit: nothing to roll back.
            if last_try or getattr(exc.__cause__, "sqlstate", None) != "26000":
                raise
            _PREPARED_IN.pop(connection.connection, None)
    raise AssertionError("unreachable")


QUICK_CLAIM_STATEMENT = "outbox_claim_quick"
_QUICK_CLAIM_PARAMETERS = {
    "token": "uuid",
    "ttl_s": "float8",
    "now": "timestamptz",
    "in_flight": "uuid",
    "limit": "int",
    "from_seq": "bigint",
}


def _quick_claim_prepared(sql: str) -> None:
    """`claim_quick`'s statement prepared in this session (once per database session, and
    again if its text changed with the settings), and JIT off for the session.

    Django binds parameters on the client and never prepares (for connection poolers), so
    PostgreSQL planned the quick claim on every wake-up: 0.25 ms of its 0.35 ms. Prepared, it
    runs in about 0.1 ms (OUTBOX_CLAIM_PREPARED; off behind a transaction-pooling PgBouncer,
    which keeps no SQL-level prepared statement between transactions).

    JIT: behind a backlog the planner's estimate crosses jit_above_cost and PostgreSQL would
    compile the claim on every run (220 ms at 300,000 pending rows, for a claim of 1 ms). A
    session-level SET: autocommit has no SET LOCAL.

    What was prepared is noted on the database session itself (psycopg's connection, weakly),
    not on Django's wrapper: a wrapper that reconnects gets a new session, a pool may hand the
    same session to another wrapper.
    """
    connection.ensure_connection()
    session = connection.connection
    if _PREPARED_IN.get(session) == sql:
        return
    positional = sql
    for number, name in enumerate(_QUICK_CLAIM_PARAMETERS, start=1):
        positional = positional.replace(f"%({name})s", f"${number}")
    types = ", ".join(_QUICK_CLAIM_PARAMETERS.values())
    _PREPARED_IN.pop(session, None)
    with connection.cursor() as cursor:
        # No bound parameter (the name is a constant): several statements in one call need the
        # simple query protocol, which a server-side-binding cursor uses only without parameters.
        cursor.execute(
            f"SET jit = off; SELECT count(*) FROM pg_prepared_statements WHERE name = '{QUICK_CLAIM_STATEMENT}'"
        )
        cursor.nextset()
        (found,) = cursor.fetchone()
        if found:  # another text of it (the settings changed), or the session came from a pool
            cursor.execute(f"DEALLOCATE {QUICK_CLAIM_STATEMENT}")
        cursor.execute(f"PREPARE {QUICK_CLAIM_STATEMENT} ({types}) AS {positional}")
    _PREPARED_IN[session] = sql


# Database session (psycopg connection) -> the text of the quick claim prepared in it.
_PREPARED_IN: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


# --- SQLite: one drain at a time holds the file lock (sqlite_lock.py), so no row locks are needed.


def _sqlite_claim(
    *, token: uuid.UUID, limit: int, now: datetime, due: datetime, in_flight: uuid.UUID, expires: datetime
) -> list[ClaimedRow]:
    field = outbox_column
    params = {
        "now": field("available_at").get_db_prep_value(now, connection),
        "due": field("available_at").get_db_prep_value(due, connection),
        "in_flight": field("claim_token").get_db_prep_value(in_flight, connection),
    }
    with connection.cursor() as cursor:
        candidates = _claimable_candidates(
            cursor,
            limit=limit,
            params=params,
            lock="",
            without=lambda candidates: _sqlite_without_rows_outside_the_claim(candidates, in_flight=in_flight),
        )
    settled = _settle([(seq, key, bool(was_abandoned), attempts) for seq, key, was_abandoned, attempts in candidates])
    for seq in settled.doomed:
        attempts = OutboxEvent.objects.get(seq=seq).attempts + 1
        OutboxEvent.objects.filter(seq=seq).update(
            status=OutboxEvent.Status.DEAD,
            attempts=attempts,
            last_error=_dead_reason(attempts),
            claim_token=None,
            claim_expires_at=None,
        )
    if settled.abandoned:
        OutboxEvent.objects.filter(seq__in=settled.abandoned).update(attempts=F("attempts") + 1, last_error=ABANDONED)
    kept = settled.kept
    if not kept:
        return []
    for chunk_start in range(0, len(kept), 500):
        OutboxEvent.objects.filter(seq__in=kept[chunk_start : chunk_start + 500]).update(
            claim_token=token, claim_expires_at=expires
        )
    rows: list[ClaimedRow] = []
    for chunk_start in range(0, len(kept), 500):
        claimed = (
            OutboxEvent.objects.filter(seq__in=kept[chunk_start : chunk_start + 500])
            # The payload goes out as the JSON text the database holds: no decode and
            # re-encode per row.
            .annotate(payload_text=Cast("payload", output_field=TextField()))
            .order_by("seq")
            .values_list(*SEND_FIELDS, "payload_text")
        )
        rows.extend(ClaimedRow.from_orm_values(values) for values in claimed)
    return _flag_abandoned(rows, settled.abandoned)


def _sqlite_without_rows_outside_the_claim(candidates: list[Candidate], *, in_flight: uuid.UUID) -> list[int]:
    """SQLite's twin of `_pg_without_rows_another_relay_is_claiming` (one drain at a time there).
    As there, it alone decides what is leased: the scan looked at each key's oldest row only."""
    picked = {seq for seq, *_ in candidates}
    last_of_key = {key: seq for seq, key, *_ in candidates}
    first_outside: dict[str, int] = {}
    keys = list(last_of_key)
    for chunk_start in range(0, len(keys), 500):
        older = (
            OutboxEvent.objects.filter(
                key__in=keys[chunk_start : chunk_start + 500],
                status__in=unfinished_statuses(),
                seq__lt=max(last_of_key.values()),
            )
            .exclude(claim_token=in_flight)
            .values_list("seq", "key")
        )
        for seq, key in older:
            if seq not in picked and seq < last_of_key[key] and seq < first_outside.get(key, seq + 1):
                first_outside[key] = seq
    return [seq for seq, key, *_ in candidates if seq < first_outside.get(key, seq + 1)]
