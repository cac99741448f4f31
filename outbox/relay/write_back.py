"""Write back: mark what the broker acknowledged, fail or release the rest; fenced by the token."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from kafka.errors import KafkaTimeoutError

from commerce.observability.telemetry import relay_send_span_end
from commerce.tracing import trace_context
from outbox.models import OutboxEvent
from outbox.relay.reconnect import done_again_until
from outbox.relay.rows import (
    PERMANENT_ERRORS,
    ClaimedRow,
    DrainResult,
    NotSent,
    Outcome,
    TopicMissing,
    backoff_seconds,
    outbox_column,
    pg_int_array,
)

logger = logging.getLogger("outbox.relay")


# The widest span of seqs one marking UPDATE covers (its arrays are as long as the span).
DENSE_RUN_MAX_SPAN = 16_384


def write_back(
    *,
    token: uuid.UUID,
    rows: list[ClaimedRow],
    outcomes: dict[int, Outcome],
    result: DrainResult,
    blocked_keys: set[str] | None = None,
    spans: dict[int, Any] | None = None,
    retry_until: float | None = None,
) -> None:
    """Mark, fail or release the rows of one batch.

    Per key in seq order: acknowledged rows are marked published with their partition and offset
    until the first row that was not; a failed row gets `attempts + 1`, its error and a backoff
    (or is marked dead: a permanent error, or `OUTBOX_MAX_ATTEMPTS` reached by an error that is
    not retriable: an outage of the cluster never kills a row); a row never sent
    (`NotSent`) and the key's later rows are released untouched. Every statement is fenced by the
    claim token: a drain whose rows another relay took over updates nothing (`fenced_out`).

    `blocked_keys` carries the keys whose failed row holds them back from one batch of a drain
    to the next: a later batch was sent before this one was written back, and its rows of such
    a key must not be marked published ahead of the failed row.

    Once written, the outcome goes to the observers: the published counter and commit->ack
    histogram (for the rows this write-back marked), the failure counters, and the end of each
    row's "send" span (`spans`, seq -> span, only while tracing is on).

    `retry_until` (monotonic): if the database session is lost (or the server gives up on a
    statement), the statements are done again, on a new session, until then: the batch's lease
    (outbox/relay/reconnect.py).
    """
    blocked_keys = set() if blocked_keys is None else blocked_keys
    now = timezone.now()
    backoffs: list[tuple[ClaimedRow, float]] = []  # failed rows and their backoff, from the database's now
    published: list[ClaimedRow] = []
    failed: list[ClaimedRow] = []
    released: list[int] = []
    rows_of_key: dict[str, list[ClaimedRow]] = defaultdict(list)
    for row in rows:
        rows_of_key[row.key].append(row)
    for key, key_rows in rows_of_key.items():
        blocked = key in blocked_keys
        for row in key_rows:
            outcome = outcomes.get(row.seq)
            if blocked:
                released.append(row.seq)
            elif isinstance(outcome, NotSent):
                # Never handed to the producer (or abandoned with it): released untouched, and
                # the key's rows in a batch sent after this one are released too.
                released.append(row.seq)
                blocked = True
                blocked_keys.add(key)
            elif isinstance(outcome, BaseException) or outcome is None:
                error = outcome or KafkaTimeoutError("no outcome")
                missing = isinstance(error, TopicMissing)  # not the row's attempt
                if not missing:
                    row.attempts += 1
                row.last_error = f"{type(error).__name__}: {error}"[:2000]
                permanent = isinstance(error, PERMANENT_ERRORS)
                # A retriable error (the broker away, a leader moving, replicas missing, a
                # timeout) is the cluster's, not the row's: it backs off, however long the
                # outage, and the row keeps its place in its key's order. A row goes dead for
                # a permanent error, or for another once its attempts reach the limit.
                exhausted = row.attempts >= settings.OUTBOX_MAX_ATTEMPTS and not getattr(error, "retriable", False)
                if permanent or exhausted:
                    row.status = OutboxEvent.Status.DEAD
                    result.dead += 1
                    # A dead row holds its key back only when the setting says so.
                    blocked = settings.OUTBOX_DEAD_BLOCKS_KEY
                else:
                    backoffs.append(
                        (row, error.backoff_s if isinstance(error, TopicMissing) else backoff_seconds(row.attempts))
                    )
                    result.failed += 1
                    blocked = True
                if blocked:
                    blocked_keys.add(key)
                failed.append(row)
                result.errors.append(row.last_error)
                with trace_context((row.headers or {}).get("traceparent")):
                    logger.warning(
                        "outbox send failed",
                        extra={
                            "event_id": row.event_id,
                            "event_type": row.type,
                            "topic": row.topic,
                            "attempts": row.attempts,
                            "status": row.status,
                            "error": row.last_error,
                        },
                    )
            else:
                row.status = OutboxEvent.Status.PUBLISHED
                row.kafka_partition = outcome.partition
                row.kafka_offset = outcome.offset
                published.append(row)
    fenced = OutboxEvent.objects.filter(claim_token=token)
    # A batch all acknowledged is one UPDATE on PostgreSQL (one dense run of seqs): in autocommit
    # it is one round trip, where a transaction adds its BEGIN and COMMIT to every write-back.
    one_statement = (
        connection.vendor == "postgresql"
        and not failed
        and not released
        and bool(published)
        and max(row.seq for row in published) - min(row.seq for row in published) < DENSE_RUN_MAX_SPAN
    )

    def statements(attempt: int) -> tuple[int, int]:
        """(rows updated, of which marked published): done again as a whole after a lost session."""
        if attempt > 1 and _written_before(published):
            # The session was lost after the write-back committed, before its reply came: the
            # rows are ours as written, not fenced out.
            return len(published) + len(failed) + len(released), len(published)
        marked = updated = 0
        if backoffs:
            retry_from = clock_now()
            for row, seconds in backoffs:
                row.available_at = retry_from + timedelta(seconds=seconds)
        with contextlib.nullcontext() if one_statement else transaction.atomic():
            if published:
                marked = _mark_published(token=token, rows=published, now=now)
                updated += marked
            if failed:
                updated += fenced.bulk_update(
                    [
                        OutboxEvent(
                            seq=r.seq,
                            status=r.status,
                            attempts=r.attempts,
                            last_error=r.last_error,
                            available_at=r.available_at or now,
                            claim_token=None,
                            claim_expires_at=None,
                        )
                        for r in failed
                    ],
                    ["status", "attempts", "last_error", "available_at", "claim_token", "claim_expires_at"],
                    batch_size=1000,
                )
            if released:
                updated += fenced.filter(seq__in=released).update(claim_token=None, claim_expires_at=None)
        return updated, marked

    updated, marked = done_again_until(statements, until=retry_until, what="write back")
    fenced_out = len(published) + len(failed) + len(released) - updated
    result.published += len(published)
    result.released += len(released)
    result.fenced_out += fenced_out
    if fenced_out:
        logger.warning("claim expired before the write back: rows left to their new owner", extra={"rows": fenced_out})
    _observe(
        published=published,
        all_marked=marked == len(published),
        failed=failed,
        released=released,
        outcomes=outcomes,
        spans=spans,
        acked_at=now,
    )


def clock_now() -> datetime:
    """Now on the clock the claims read: the database's on PostgreSQL (a relay or an operator
    whose host clock is off would otherwise make a backoff or a requeue late, or no backoff at
    all), the host's on SQLite (one host)."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        found: datetime = cursor.fetchone()[0]
        return found


# A lease that ran out long ago: an abandoned row handed back reads as abandoned on any clock.
_LONG_EXPIRED = datetime(2000, 1, 1, tzinfo=UTC)


def hand_back_abandoned(*, token: uuid.UUID, rows: list[ClaimedRow], retry_until: float | None = None) -> int:
    """Give back abandoned rows this drain claimed and never sent, as the claim found them:
    under a lease token whose lease ran out, without the attempt their takeover counted. The next
    claim takes each alone again (a release would clear the token and make it a row like any
    other, sent in a full batch). Fenced by the token (so done at most once however often it is
    run again on a new session until `retry_until`); returns the rows handed back."""
    if not rows:
        return 0
    return done_again_until(
        lambda attempt: OutboxEvent.objects.filter(claim_token=token, seq__in=[row.seq for row in rows]).update(
            claim_token=uuid.uuid4(), claim_expires_at=_LONG_EXPIRED, attempts=F("attempts") - 1
        ),
        until=retry_until,
        what="hand back",
    )


def release_unseen_claim(*, token: uuid.UUID, retry_until: float | None = None) -> int:
    """Release the rows a claim that failed may have leased all the same: its session was lost
    after the claim committed, before its reply came, so the drain never saw them. Fenced by the
    claim's token; returns the rows released (none when the claim did not commit)."""
    return done_again_until(
        lambda attempt: OutboxEvent.objects.filter(claim_token=token).update(claim_token=None, claim_expires_at=None),
        until=retry_until,
        what="release a claim not seen",
    )


def _written_before(published: list[ClaimedRow]) -> bool:
    """True when the acknowledged rows already stand published with the partition and offset
    this batch got: a write-back that committed on a session lost before its reply (a write-back
    is all or nothing, so its published rows tell). Another relay's send would have others."""
    if not published:
        return False
    ours = {(row.seq, row.kafka_partition, row.kafka_offset) for row in published}
    found = OutboxEvent.objects.filter(
        seq__in=[row.seq for row in published], status=OutboxEvent.Status.PUBLISHED
    ).values_list("seq", "kafka_partition", "kafka_offset")
    return ours <= set(found)


def _observe(
    *,
    published: list[ClaimedRow],
    all_marked: bool,
    failed: list[ClaimedRow],
    released: list[int],
    outcomes: dict[int, Outcome],
    spans: dict[int, Any] | None,
    acked_at: datetime,
) -> None:
    """The batch's outcome to the metrics and spans. Published rows are counted only when this
    write-back marked them all: rows fenced out are their new owner's to send and count."""
    # Imported on first use, not with the relay: a Celery worker imports the relay (its tasks)
    # before it makes PROMETHEUS_MULTIPROC_DIR, where the metrics' files go once defined.
    from commerce.observability.metrics import relay_failed_observed, relay_published_batch_observed

    if published and all_marked:
        relay_published_batch_observed(rows=[(row.topic, row.occurred_at) for row in published], acked_at=acked_at)
    for row in failed:
        relay_failed_observed(topic=row.topic, error=row.last_error, dead=row.status == OutboxEvent.Status.DEAD)
    if not spans:
        return
    for row in published:
        span = spans.pop(row.seq, None)
        if span is not None:
            relay_send_span_end(span, partition=row.kafka_partition, offset=row.kafka_offset)
    for row in failed:
        span = spans.pop(row.seq, None)
        if span is not None:
            # A failed row's outcome is its exception, or none at all (then its last_error says why).
            outcome = outcomes.get(row.seq)
            relay_send_span_end(
                span,
                error=outcome if isinstance(outcome, BaseException) else row.last_error,
                dead=row.status == OutboxEvent.Status.DEAD,
            )
    for seq in released:
        span = spans.pop(seq, None)
        if span is not None:  # handed to the producer, then dropped with it, or held behind a failure
            outcome = outcomes.get(seq)
            relay_send_span_end(
                span,
                error=outcome if isinstance(outcome, BaseException) else "released: an earlier row of its key failed",
            )
    for span in spans.values():  # rows of a batch whose write-back was cut short
        relay_send_span_end(span, error="not written back")
    spans.clear()


def _mark_published(*, token: uuid.UUID, rows: list[ClaimedRow], now: datetime) -> int:
    """Mark the acknowledged rows, fenced by the claim token; returns the rows updated.

    One statement per batch on PostgreSQL (Django's bulk_update builds a CASE per row and field,
    which costs more than the sends themselves).
    """
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    field = outbox_column
    token_db = field("claim_token").get_db_prep_value(token, connection)
    now_db = field("published_at").get_db_prep_value(now, connection)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            updated = 0
            for run in _dense_runs(sorted(rows, key=lambda row: row.seq)):
                # Each row finds its partition and offset at subscript `seq - base` of arrays
                # as long as the run's span: O(1) per row. (A join with unnest() can be planned
                # as a nested loop on a freshly filled table, and array_position() is linear:
                # both are quadratic in the batch size.)
                base = run[0].seq
                span = run[-1].seq - base + 1
                partitions: list[int | None] = [None] * span
                offsets: list[int | None] = [None] * span
                for row in run:
                    partitions[row.seq - base] = row.kafka_partition
                    offsets[row.seq - base] = row.kafka_offset
                cursor.execute(
                    f"UPDATE {table} SET status = 'published', published_at = %(now)s, "
                    "kafka_partition = (%(parts)s::integer[])[seq - %(base)s + 1], "
                    "kafka_offset = (%(offs)s::bigint[])[seq - %(base)s + 1], "
                    "claim_token = NULL, claim_expires_at = NULL "
                    "WHERE seq = ANY(%(seqs)s::bigint[]) AND claim_token = %(token)s",
                    {
                        "now": now_db,
                        "base": base,
                        "parts": pg_int_array(partitions),
                        "offs": pg_int_array(offsets),
                        "seqs": pg_int_array([row.seq for row in run]),
                        "token": token_db,
                    },
                )
                updated += cursor.rowcount
            return updated
        updated = 0
        for row in rows:
            cursor.execute(
                f"UPDATE {table} SET status = 'published', published_at = %s, kafka_partition = %s, "
                "kafka_offset = %s, claim_token = NULL, claim_expires_at = NULL "
                "WHERE seq = %s AND claim_token = %s",
                [now_db, row.kafka_partition, row.kafka_offset, row.seq, token_db],
            )
            updated += cursor.rowcount
        return updated


def _dense_runs(rows: list[ClaimedRow], max_span: int = DENSE_RUN_MAX_SPAN) -> Iterator[list[ClaimedRow]]:
    """The rows, sorted by seq, cut into runs whose seqs span at most `max_span`."""
    run: list[ClaimedRow] = []
    for row in rows:
        if run and row.seq - run[0].seq >= max_span:
            yield run
            run = []
        run.append(row)
    if run:
        yield run
