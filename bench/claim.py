"""Claim cost with blocked keys: `claim_batch` on a table of 1,000,000 outbox rows, 100,000 of
them pending, 1,000 keys held back by a row in backoff (PostgreSQL).

The blocked keys' rows are the oldest pending ones (the worst place for them: every claim scans
past them), the rest are 9,000 keys with due rows, and 900,000 published rows lie below. Each
measured claim takes a batch (default 500) and the rows are released again, untimed, so every
claim sees the same table. Baseline in the same run: the plain oldest-first `SELECT ... LIMIT n
FOR UPDATE SKIP LOCKED` of due rows without any per-key filter (what a claim cannot be cheaper
than), and how many rows the claim before issue 12 would have returned on this table.

    .venv/bin/python bench/claim.py [--quick] [--batch-size N] [--claims N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from common import django_setup, finish, say, tables_empty

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from outbox.relay.rows import ClaimedRow

T = TypeVar("T")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 10,000 pending, 100 blocked keys")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--claims", type=int, default=None)
    options = parser.parse_args()
    scale = 10 if options.quick else 1
    total, pending, blocked_keys = 1_000_000 // scale, 100_000 // scale, 1_000 // scale
    keys = 10_000 // scale
    per_key = pending // keys
    claims = options.claims or (20 if options.quick else 50)
    django_setup()

    from django.conf import settings
    from django.db import connection, transaction
    from django.utils import timezone

    from outbox.models import OutboxEvent
    from outbox.relay import claim_batch

    table = OutboxEvent._meta.db_table
    # The catalog topic, one of the configured ones: the claim gives it its fair share first
    # (one query per topic), then fills the batch.
    topic = settings.KAFKA_TOPICS["catalog-events"]
    tables_empty(OutboxEvent)
    say(
        f"filling {total:,} rows: {total - pending:,} published, {pending:,} pending over {keys:,} keys "
        f"({per_key} each), {blocked_keys:,} keys blocked by a row in backoff ..."
    )
    started = time.perf_counter()
    columns = (
        "id, topic, key, type, event_version, aggregatetype, aggregateid, payload, headers, "
        "occurred_at, created_at, status, available_at, attempts, last_error, published_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT gen_random_uuid(), 't', 'old-' || (g %% 5000), "
            "'SequenceRecorded', 1, 'product', 'old', '{}'::jsonb, '{}'::jsonb, now(), now(), "
            "'published', now(), 0, '', now() FROM generate_series(1, %s) g",
            [total - pending],
        )
        # Pending rows: the blocked keys' rows first (oldest), then the free keys', interleaved
        # across keys in each group as services record them.
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT gen_random_uuid(), %(topic)s, 'k' || k, "
            "'SequenceRecorded', 1, 'product', 'k' || k, jsonb_build_object('sequence', s), "
            "'{}'::jsonb, now(), now(), 'pending', now() - interval '1 minute', 0, '', NULL "
            "FROM generate_series(0, %(per_key)s - 1) s, generate_series(0, %(blocked)s - 1) k "
            "ORDER BY s, k",
            {"per_key": per_key, "blocked": blocked_keys, "topic": topic},
        )
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT gen_random_uuid(), %(topic)s, 'k' || k, "
            "'SequenceRecorded', 1, 'product', 'k' || k, jsonb_build_object('sequence', s), "
            "'{}'::jsonb, now(), now(), 'pending', now() - interval '1 minute', 0, '', NULL "
            "FROM generate_series(0, %(per_key)s - 1) s, generate_series(%(blocked)s, %(keys)s - 1) k "
            "ORDER BY s, k",
            {"per_key": per_key, "blocked": blocked_keys, "keys": keys, "topic": topic},
        )
        # Each blocked key's oldest row waits for its retry, an hour away.
        cursor.execute(
            f"UPDATE {table} SET attempts = 1, last_error = 'KafkaTimeoutError', "
            "available_at = now() + interval '1 hour' WHERE seq IN (SELECT min(seq) FROM "
            f"{table} WHERE status = 'pending' AND key = ANY(%s) GROUP BY key)",
            [[f"k{k}" for k in range(blocked_keys)]],
        )
        cursor.execute(f"VACUUM ANALYZE {table}")
    say(f"filled in {time.perf_counter() - started:.1f} s")

    def release(seqs: list[int]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET claim_token = NULL, claim_expires_at = NULL WHERE seq = ANY(%s)", [seqs]
            )

    def plain_select() -> int:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT seq, key FROM {table} WHERE status = 'pending' AND available_at <= now() "
                "AND (claim_expires_at IS NULL OR claim_expires_at < now()) "
                "ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED",
                [options.batch_size],
            )
            return len(cursor.fetchall())

    def timed(function: Callable[[], T], rounds: int) -> tuple[list[float], T]:
        times: list[float] = []
        outs: list[T] = []
        for _ in range(rounds):
            began = time.perf_counter()
            out = function()
            times.append((time.perf_counter() - began) * 1000)
            if isinstance(out, list):
                release([row.seq for row in out])
            outs.append(out)
        return times, outs[-1]

    def claim() -> list[ClaimedRow]:
        return claim_batch(token=uuid.uuid4(), limit=options.batch_size, now=timezone.now())

    timed(claim, 3)  # warm the caches and the plans
    claim_ms, claimed = [], []
    plain_ms: list[float] = []
    # ABAB: the claim and its baseline alternate, so that drift on a shared machine hits both.
    for _ in range(claims):
        times, rows = timed(claim, 1)
        claim_ms += times
        claimed.append(len(rows))
        times, _ = timed(plain_select, 1)
        plain_ms += times
    blocked_rows_in_window = _old_claim_count(connection, table, options.batch_size)
    tables_empty(OutboxEvent)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    claim_p50, plain_p50 = statistics.median(claim_ms), statistics.median(plain_ms)
    say(
        f"claim of {options.batch_size}: p50 {claim_p50:.2f} ms, p99 {pct(claim_ms, 0.99):.2f} ms, "
        f"rows claimed {min(claimed)}-{max(claimed)} (of {pending - blocked_keys * per_key:,} claimable)"
    )
    say(
        f"plain SELECT ... LIMIT {options.batch_size} FOR UPDATE SKIP LOCKED (no per-key filter): "
        f"p50 {plain_p50:.2f} ms, p99 {pct(plain_ms, 0.99):.2f} ms"
    )
    say(f"claim / plain select = {claim_p50 / plain_p50:.2f}x")
    say(
        f"the claim before issue 12 (oldest {options.batch_size} due rows, then drop blocked keys) "
        f"would have returned {blocked_rows_in_window} rows here"
    )
    finish(
        {
            "rows": total,
            "pending": pending,
            "blocked_keys": blocked_keys,
            "batch_size": options.batch_size,
            "claims": claims,
            "claim_p50_ms": round(claim_p50, 2),
            "claim_p99_ms": round(pct(claim_ms, 0.99), 2),
            "plain_select_p50_ms": round(plain_p50, 2),
            "ratio_vs_plain": round(claim_p50 / plain_p50, 2),
            "rows_claimed_min": min(claimed),
            "old_claim_rows": blocked_rows_in_window,
        }
    )


def _old_claim_count(connection: BaseDatabaseWrapper, table: str, limit: int) -> int:
    """What the claim before issue 12 kept of the oldest `limit` due rows: those of keys with no
    older unfinished row outside them."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH picked AS (SELECT seq, key FROM {table} WHERE status = 'pending' "
            "AND available_at <= now() ORDER BY seq LIMIT %s) "
            "SELECT count(*) FROM picked p WHERE NOT EXISTS (SELECT 1 FROM "
            f"{table} b WHERE b.key = p.key AND b.seq < p.seq AND b.status = 'pending' "
            "AND b.seq NOT IN (SELECT seq FROM picked))",
            [limit],
        )
        return cursor.fetchone()[0]


if __name__ == "__main__":
    main()
