"""The relay: drain pending outbox rows to Kafka, in per-key order, marking them only when acked.

One drain repeats claim -> send -> write back until nothing is claimable or its time budget is
spent.

**Claim.** In one short transaction the relay picks up to `OUTBOX_BATCH_SIZE` pending rows that
are due (`available_at <= now`) and not under a live lease, oldest first, with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent relays take disjoint rows. A row is kept
only if no *older* unfinished row of its key lies outside the picked set (a row in backoff, a row
under another relay's lease, a row another relay is claiming right now, and a dead row when
`OUTBOX_DEAD_BLOCKS_KEY`): a key's rows are therefore only ever held by one relay, and always
from its oldest unfinished row on. The kept rows get this drain's claim token and a lease of
`OUTBOX_CLAIM_TTL` seconds; the transaction commits before anything is sent.

**Send.** Outside any transaction, every claimed row is handed to the process's idempotent
producer (`acks=all`) in `seq` order. Idempotence with at most five requests in flight keeps the
order of one partition across the producer's own retries.

**Pipeline.** A drain overlaps its database work with its sends: a sender thread hands batch N
to the producer while the drain's own thread claims batch N+1 and writes back batch N-1 once the
broker acknowledged it. Rows of the batch being sent do not hold their keys back from the next
claim (`in_flight`): the producer sends them first. A key whose row failed in one batch has its
rows in the next batch released unmarked (`blocked_keys`), exactly as later rows of the same
batch are.

**Write back.** Per key in `seq` order: rows the broker acknowledged are marked published with
their partition and offset, until the first failure; the failed row gets `attempts + 1`, the
error and an exponential backoff with jitter (or is marked dead: a permanent error, or
`OUTBOX_MAX_ATTEMPTS` reached), and the key's later rows are released untouched, so they wait
behind it. Every write-back is fenced by the claim token: a drain whose lease expired, and whose
rows another relay took over, updates nothing. A crash between the acknowledgement and the write
back re-sends those rows later (up to two batches): duplicates are possible, loss is not.

**Cost.** On PostgreSQL each step is one statement with array parameters, whatever the batch
size; the claim returns header values as text, ready to send; the table leaves room on its pages
(fillfactor 50, migration 0003) so that the claim's update is a HOT update.

**SQLite** has no row locks: there, one drain at a time holds a file lock (`var/outbox-relay.lock`)
and a second drain returns at once. Run one worker process (or accept that the others wait).
"""

from __future__ import annotations

import fcntl
import json
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from kafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from commerce.tracing import trace_context
from outbox.envelope import iso_utc
from outbox.kafka import producer_get, producer_reset
from outbox.models import OutboxEvent

logger = logging.getLogger(__name__)

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError, TypeError, ValueError,
)
SEND_FIELDS = ["seq", "event_id", "topic", "key", "type", "event_version", "aggregatetype",
               "aggregateid", "aggregate_version", "headers", "occurred_at", "attempts"]


class ProducerUnavailable(KafkaError):
    """The producer could not be made or used at all: retriable, whatever the cause was."""

    retriable = True


@dataclass
class DrainResult:
    published: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    fenced_out: int = 0
    batches: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"published": self.published, "failed": self.failed, "dead": self.dead,
                "released": self.released, "fenced_out": self.fenced_out,
                "batches": self.batches, "seconds": round(self.seconds, 3)}


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(max, base * 2^attempts)]."""
    ceiling = min(settings.OUTBOX_BACKOFF_MAX, settings.OUTBOX_BACKOFF_BASE * (2 ** max(attempts - 1, 0)))
    return random.uniform(min(settings.OUTBOX_BACKOFF_BASE / 2, ceiling), ceiling)


def _unfinished_statuses() -> list[str]:
    if settings.OUTBOX_DEAD_BLOCKS_KEY:
        return [OutboxEvent.Status.PENDING, OutboxEvent.Status.DEAD]
    return [OutboxEvent.Status.PENDING]


@dataclass(slots=True)
class ClaimedRow:
    """What the relay needs of a claimed row: plain values, no model instance per row."""

    seq: int
    event_id: str
    topic: str
    key: str
    type: str
    event_version: int
    aggregatetype: str
    aggregateid: str
    aggregate_version: int | None
    headers: dict
    occurred_at: str  # ISO-8601 UTC, as the header carries it
    attempts: int
    payload_text: str
    status: str = OutboxEvent.Status.PENDING
    last_error: str = ""
    available_at: datetime | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None

    @property
    def payload(self) -> dict:
        return json.loads(self.payload_text)

    @classmethod
    def from_orm_values(cls, values: tuple) -> ClaimedRow:
        """From `values_list(*SEND_FIELDS, "payload_text")`."""
        (seq, event_id, topic, key, type_, event_version, aggregatetype, aggregateid,
         aggregate_version, headers, occurred_at, attempts, payload_text) = values
        return cls(seq, str(event_id), topic, key, type_, event_version, aggregatetype, aggregateid,
                   aggregate_version, headers, iso_utc(occurred_at), attempts, payload_text)


def claim_batch(*, token: uuid.UUID, limit: int, now: datetime | None = None,
                in_flight: uuid.UUID | None = None) -> list[ClaimedRow]:
    """Claim the next rows this relay may send (see the module docstring). Commits on return.

    `in_flight` is the token of this drain's batch that is sent but not yet written back: its
    rows were handed to the same producer before anything claimed now, so they do not hold
    their keys back.
    """
    now = now or timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            candidates = _pg_candidates(now=now, limit=limit)
        else:
            candidates = list(
                OutboxEvent.objects
                .filter(status=OutboxEvent.Status.PENDING, available_at__lte=now)
                .filter(Q(claim_expires_at__isnull=True) | Q(claim_expires_at__lt=now))
                .order_by("seq").values_list("seq", "key")[:limit])
        if not candidates:
            return []
        picked = {seq for seq, _ in candidates}
        last_seq_of_key: dict[str, int] = {}
        for seq, key in candidates:
            last_seq_of_key[key] = seq
        first_blocker: dict[str, int] = {}
        for seq, key, claim_token in _unfinished_rows_of(last_seq_of_key, max(last_seq_of_key.values())):
            if (seq not in picked and key not in first_blocker and seq < last_seq_of_key[key]
                    and (in_flight is None or claim_token != in_flight)):
                first_blocker[key] = seq
        kept = [seq for seq, key in candidates if seq < first_blocker.get(key, seq + 1)]
        if not kept:
            return []
        expires = now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL)
        if connection.vendor == "postgresql":
            return _pg_lease(kept, token=token, expires=expires)
        for chunk_start in range(0, len(kept), 500):
            OutboxEvent.objects.filter(seq__in=kept[chunk_start:chunk_start + 500]).update(
                claim_token=token, claim_expires_at=expires)
    claimed = (OutboxEvent.objects.filter(claim_token=token, status=OutboxEvent.Status.PENDING)
               # The payload goes out as the JSON text the database holds: no decode and
               # re-encode per row.
               .annotate(payload_text=Cast("payload", output_field=TextField()))
               .order_by("seq").values_list(*SEND_FIELDS, "payload_text"))
    return [ClaimedRow.from_orm_values(values) for values in claimed]


# The PostgreSQL path of the claim is plain SQL with array parameters: one statement per step
# whatever the batch size (an `IN` list of 2,000 placeholders costs more to build and parse than
# the rows cost to read).
_TABLE = OutboxEvent._meta.db_table


def _pg_candidates(*, now: datetime, limit: int) -> list[tuple[int, str]]:
    with connection.cursor() as cursor:
        # The partial index on pending rows by `seq` yields them oldest first: the scan stops
        # after `limit` due rows, however long the backlog.
        cursor.execute(
            f"SELECT seq, key FROM {_TABLE} WHERE status = 'pending' AND available_at <= %(now)s "
            "AND (claim_expires_at IS NULL OR claim_expires_at < %(now)s) "
            "ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
            {"now": now, "limit": limit})
        return cursor.fetchall()


def _unfinished_rows_of(last_seq_of_key: dict[str, int], below: int) -> Iterator[tuple]:
    """(seq, key, claim_token) of the unfinished rows of these keys older than `below`, by seq."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT seq, key, claim_token FROM {_TABLE} WHERE key = ANY(%(keys)s) "
                "AND status = ANY(%(statuses)s) AND seq < %(below)s ORDER BY seq",
                {"keys": list(last_seq_of_key), "statuses": _unfinished_statuses(), "below": below})
            yield from cursor.fetchall()
        return
    keys = list(last_seq_of_key)
    for chunk_start in range(0, len(keys), 500):
        yield from (OutboxEvent.objects
                    .filter(key__in=keys[chunk_start:chunk_start + 500],
                            status__in=_unfinished_statuses(), seq__lt=below)
                    .order_by("seq").values_list("seq", "key", "claim_token"))


def _pg_lease(kept: list[int], *, token: uuid.UUID, expires: datetime) -> list[ClaimedRow]:
    with connection.cursor() as cursor:
        # Text columns where the header wants text: converting 2,000 uuids and timestamps to
        # Python objects and back costs as much as the update itself.
        cursor.execute(
            f"UPDATE {_TABLE} SET claim_token = %(token)s, claim_expires_at = %(expires)s "
            "WHERE seq = ANY(%(kept)s) RETURNING seq, id::text, topic, key, type, event_version, "
            "aggregatetype, aggregateid, aggregate_version, headers::text, "
            "replace(to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "'.000000Z', 'Z'), attempts, payload::text",
            {"token": token, "expires": expires, "kept": kept})
        fetched = cursor.fetchall()
    loads = json.loads
    rows = [ClaimedRow(seq, event_id, topic, key, type_, version, aggregatetype, aggregateid,
                       aggregate_version, loads(headers), occurred_at, attempts, payload)
            for (seq, event_id, topic, key, type_, version, aggregatetype, aggregateid,
                 aggregate_version, headers, occurred_at, attempts, payload) in fetched]
    rows.sort(key=lambda row: row.seq)
    return rows


def _record_headers(row: ClaimedRow) -> list[tuple[str, bytes]]:
    headers = [
        ("event_id", row.event_id.encode()),
        ("event_type", row.type.encode()),
        ("event_version", str(row.event_version).encode()),
        ("aggregate_type", row.aggregatetype.encode()),
        ("aggregate_id", row.aggregateid.encode()),
        ("occurred_at", row.occurred_at.encode()),
    ]
    if row.aggregate_version is not None:
        headers.append(("aggregate_version", str(row.aggregate_version).encode()))
    for name, value in (row.headers or {}).items():
        headers.append((name, str(value).encode()))
    return headers


@dataclass
class _SentBatch:
    """A claimed batch handed to the producer, not yet written back."""

    token: uuid.UUID
    rows: list[ClaimedRow]
    futures: dict[int, object]
    outcomes: dict[int, object]
    deadline: float


def _send(token: uuid.UUID, rows: list[ClaimedRow]) -> _SentBatch:
    """Hand every row to the producer, in seq order; does not wait for the acknowledgements."""
    deadline = time.monotonic() + settings.OUTBOX_CLAIM_TTL / 2
    outcomes: dict[int, object] = {}
    futures: dict[int, object] = {}
    try:
        producer = producer_get()
    except Exception as exc:  # noqa: BLE001 - recorded on every row of the batch
        # The producer itself failed (e.g. no broker to bootstrap from): every row failed.
        producer_reset()
        unavailable = ProducerUnavailable(f"{type(exc).__name__}: {exc}")
        return _SentBatch(token, rows, {}, {row.seq: unavailable for row in rows}, deadline)
    send = producer.send
    for row in rows:
        try:
            futures[row.seq] = send(row.topic, key=row.key.encode(), value=row.payload_text.encode(),
                                    headers=_record_headers(row))
        except Exception as exc:  # noqa: BLE001 - each row's failure is recorded on the row
            outcomes[row.seq] = exc
    return _SentBatch(token, rows, futures, outcomes, deadline)


def _acknowledged(batch: _SentBatch, *, flush: bool) -> dict[int, object]:
    """Wait until the broker answered for every row of the batch (or its deadline passed).

    Returns seq -> RecordMetadata or the exception that row ended with. `flush` sends what the
    producer still lingers on at once: for the last batch of a drain, where nothing follows.
    """
    outcomes = dict(batch.outcomes)
    if flush and batch.futures:
        try:
            producer_get().flush(timeout=max(0.0, batch.deadline - time.monotonic()))
        except KafkaError as exc:
            logger.warning("producer flush did not complete", extra={"error": repr(exc)})
    for seq, future in batch.futures.items():
        if not future.is_done:
            try:
                future.get(timeout=max(0.0, batch.deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - the outcome is read from the future below
                pass
        if future.is_done:
            outcomes[seq] = future.value if future.exception is None else future.exception
        else:
            outcomes[seq] = KafkaError("not acknowledged before the deadline")
    return outcomes


def _write_back(*, token: uuid.UUID, rows: list[ClaimedRow], outcomes: dict[int, object],
                result: DrainResult, blocked_keys: set[str] | None = None) -> None:
    """Mark, fail or release the rows of one batch (see the module docstring).

    `blocked_keys` carries the keys whose failed row holds them back from one batch of a drain
    to the next: a later batch was sent before this one was written back, and its rows of such
    a key must not be marked published ahead of the failed row.
    """
    blocked_keys = set() if blocked_keys is None else blocked_keys
    now = timezone.now()
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
            elif isinstance(outcome, BaseException) or outcome is None:
                error = outcome or KafkaError("no outcome")
                row.attempts += 1
                row.last_error = f"{type(error).__name__}: {error}"[:2000]
                permanent = isinstance(error, PERMANENT_ERRORS)
                if permanent or row.attempts >= settings.OUTBOX_MAX_ATTEMPTS:
                    row.status = OutboxEvent.Status.DEAD
                    result.dead += 1
                    # A dead row holds its key back only when the setting says so.
                    blocked = settings.OUTBOX_DEAD_BLOCKS_KEY
                else:
                    row.available_at = now + timedelta(seconds=backoff_seconds(row.attempts))
                    result.failed += 1
                    blocked = True
                if blocked:
                    blocked_keys.add(key)
                failed.append(row)
                result.errors.append(row.last_error)
                with trace_context((row.headers or {}).get("traceparent")):
                    logger.warning("outbox send failed", extra={
                        "event_id": row.event_id, "event_type": row.type, "topic": row.topic,
                        "attempts": row.attempts, "status": row.status, "error": row.last_error})
            else:
                row.status = OutboxEvent.Status.PUBLISHED
                row.kafka_partition = outcome.partition
                row.kafka_offset = outcome.offset
                published.append(row)
    fenced = OutboxEvent.objects.filter(claim_token=token)
    with transaction.atomic():
        updated = 0
        if published:
            updated += _mark_published(token=token, rows=published, now=now)
        if failed:
            updated += fenced.bulk_update(
                [OutboxEvent(seq=r.seq, status=r.status, attempts=r.attempts, last_error=r.last_error,
                             available_at=r.available_at or now, claim_token=None, claim_expires_at=None)
                 for r in failed],
                ["status", "attempts", "last_error", "available_at", "claim_token", "claim_expires_at"],
                batch_size=1000)
        if released:
            updated += fenced.filter(seq__in=released).update(claim_token=None, claim_expires_at=None)
    result.published += len(published)
    result.released += len(released)
    result.fenced_out += len(published) + len(failed) + len(released) - updated
    if result.fenced_out:
        logger.warning("claim expired before the write back: rows left to their new owner",
                       extra={"rows": result.fenced_out})


def _mark_published(*, token: uuid.UUID, rows: list[ClaimedRow], now: datetime) -> int:
    """Mark the acknowledged rows, fenced by the claim token; returns the rows updated.

    One statement per batch on PostgreSQL (Django's bulk_update builds a CASE per row and field,
    which costs more than the sends themselves).
    """
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    field = OutboxEvent._meta.get_field
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
                    {"now": now_db, "base": base, "parts": partitions, "offs": offsets,
                     "seqs": [row.seq for row in run], "token": token_db})
                updated += cursor.rowcount
            return updated
        updated = 0
        for row in rows:
            cursor.execute(
                f"UPDATE {table} SET status = 'published', published_at = %s, kafka_partition = %s, "
                "kafka_offset = %s, claim_token = NULL, claim_expires_at = NULL "
                "WHERE seq = %s AND claim_token = %s",
                [now_db, row.kafka_partition, row.kafka_offset, row.seq, token_db])
            updated += cursor.rowcount
        return updated


def _dense_runs(rows: list[ClaimedRow], max_span: int = 16_384) -> Iterator[list[ClaimedRow]]:
    """The rows, sorted by seq, cut into runs whose seqs span at most `max_span`."""
    run: list[ClaimedRow] = []
    for row in rows:
        if run and row.seq - run[0].seq >= max_span:
            yield run
            run = []
        run.append(row)
    if run:
        yield run


@contextmanager
def _single_relay_on_sqlite() -> Iterator[bool]:
    if connection.vendor != "sqlite":
        yield True
        return
    lock_path = settings.VAR_DIR / "outbox-relay.lock"
    with open(lock_path, "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def relay_drain(*, batch_size: int | None = None, time_budget_s: float = 10.0,
                max_batches: int | None = None) -> DrainResult:
    """Publish due outbox rows until none is claimable or the time budget is spent.

    Pipelined: batch N+1 is claimed and handed to the producer while the broker still works on
    batch N, then N is written back. The producer keeps the order of what it was handed, so a
    key may have rows in two consecutive batches; a key whose row failed in N has its rows in
    N+1 released unmarked (`blocked_keys`), to be sent again after the failed row.
    """
    result = DrainResult()
    started = time.monotonic()
    limit = batch_size or settings.OUTBOX_BATCH_SIZE
    with _single_relay_on_sqlite() as may_run:
        if not may_run:
            return result
        blocked_keys: set[str] = set()
        claiming = True

        def claim_next(in_flight: uuid.UUID | None) -> tuple[uuid.UUID, list[ClaimedRow]]:
            nonlocal claiming
            if claiming and (time.monotonic() - started >= time_budget_s
                             or (max_batches is not None and result.batches >= max_batches)):
                claiming = False
            token = uuid.uuid4()
            rows = claim_batch(token=token, limit=limit, in_flight=in_flight) if claiming else []
            if rows:
                result.batches += 1
            else:
                claiming = False
            return token, rows

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-send") as sender:
            token, rows = claim_next(None)
            sending = sender.submit(_send, token, rows) if rows else None
            while sending is not None:
                # The database work of this step (claim the next batch, write back the batch
                # being acknowledged) runs while the sender thread hands the batch to the
                # producer: the two overlap.
                next_token, next_rows = claim_next(token)
                sent = sending.result()
                if sent.outcomes:
                    claiming = False  # the producer refused rows: no more until backoff
                sending = sender.submit(_send, next_token, next_rows) if next_rows else None
                token = next_token
                outcomes = _acknowledged(sent, flush=sending is None)
                if settings.OUTBOX_FAULT_PAUSE_AFTER_SEND:
                    # Fault tests kill the relay here: sent and acknowledged, not yet marked.
                    logger.warning("paused after send", extra={"rows": len(sent.rows)})
                    time.sleep(settings.OUTBOX_FAULT_PAUSE_AFTER_SEND)
                _write_back(token=sent.token, rows=sent.rows, outcomes=outcomes,
                            result=result, blocked_keys=blocked_keys)
                if result.failed or result.dead:
                    claiming = False  # let backoff work instead of spinning on a failing broker
    if result.failed:
        # A producer whose sends timed out can stay wedged after the brokers are back (seen on a
        # cluster whose brokers were stopped: every later send unacknowledged): the next drain
        # gets a fresh one. Unacknowledged rows are pending, so nothing it held is lost.
        producer_reset()
    result.seconds = time.monotonic() - started
    if result.batches:
        level = logging.WARNING if result.failed or result.dead else logging.INFO
        logger.log(level, "outbox drain", extra={**result.as_dict(),
                                                 "last_error": result.errors[-1] if result.errors else None})
    return result
