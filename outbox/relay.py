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
producer (`acks=all`) in `seq` order, then the producer is flushed. Idempotence with at most five
requests in flight keeps the order of one partition across the producer's own retries.

**Write back.** Per key in `seq` order: rows the broker acknowledged are marked published with
their partition and offset, until the first failure; the failed row gets `attempts + 1`, the
error and an exponential backoff with jitter (or is marked dead: a permanent error, or
`OUTBOX_MAX_ATTEMPTS` reached), and the key's later rows are released untouched, so they wait
behind it. Every write-back is fenced by the claim token: a drain whose lease expired, and whose
rows another relay took over, updates nothing. A crash between the acknowledgement and the write
back re-sends those rows later: duplicates are possible, loss is not.

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
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

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
from outbox.kafka import producer_get, producer_reset
from outbox.models import OutboxEvent

logger = logging.getLogger(__name__)

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError, TypeError, ValueError,
)
SEND_FIELDS = ["seq", "event_id", "topic", "key", "type", "event_version", "aggregatetype",
               "aggregateid", "headers", "occurred_at", "attempts"]


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
    event_id: uuid.UUID
    topic: str
    key: str
    type: str
    event_version: int
    aggregatetype: str
    aggregateid: str
    headers: dict
    occurred_at: datetime
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


def claim_batch(*, token: uuid.UUID, limit: int, now: datetime | None = None) -> list[ClaimedRow]:
    """Claim the next rows this relay may send (see the module docstring). Commits on return."""
    now = now or timezone.now()
    with transaction.atomic():
        due = (OutboxEvent.objects
               .filter(status=OutboxEvent.Status.PENDING, available_at__lte=now)
               .filter(Q(claim_expires_at__isnull=True) | Q(claim_expires_at__lt=now))
               .order_by("seq"))
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        candidates = list(due.values_list("seq", "key")[:limit])
        if not candidates:
            return []
        picked = {seq for seq, _ in candidates}
        last_seq_of_key: dict[str, int] = {}
        for seq, key in candidates:
            last_seq_of_key[key] = seq
        first_blocker: dict[str, int] = {}
        older = (OutboxEvent.objects
                 .filter(key__in=list(last_seq_of_key), status__in=_unfinished_statuses(),
                         seq__lte=max(last_seq_of_key.values()))
                 .order_by("seq").values_list("seq", "key"))
        for seq, key in older.iterator(chunk_size=5000):
            if seq not in picked and key not in first_blocker and seq < last_seq_of_key[key]:
                first_blocker[key] = seq
        kept = [seq for seq, key in candidates if seq < first_blocker.get(key, seq + 1)]
        if not kept:
            return []
        expires = now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL)
        for chunk_start in range(0, len(kept), 2000):
            OutboxEvent.objects.filter(seq__in=kept[chunk_start:chunk_start + 2000]).update(
                claim_token=token, claim_expires_at=expires)
    claimed = (OutboxEvent.objects.filter(claim_token=token, status=OutboxEvent.Status.PENDING)
               # The payload goes out as the JSON text the database holds: no decode and
               # re-encode per row.
               .annotate(payload_text=Cast("payload", output_field=TextField()))
               .order_by("seq").values_list(*SEND_FIELDS, "payload_text"))
    return [ClaimedRow(*values) for values in claimed]


def _record_headers(row: ClaimedRow) -> list[tuple[str, bytes]]:
    occurred = row.occurred_at.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")
    headers = [
        ("event_id", str(row.event_id).encode()),
        ("event_type", row.type.encode()),
        ("event_version", str(row.event_version).encode()),
        ("aggregate_type", row.aggregatetype.encode()),
        ("aggregate_id", row.aggregateid.encode()),
        ("occurred_at", occurred.encode()),
    ]
    for name, value in (row.headers or {}).items():
        headers.append((name, str(value).encode()))
    return headers


def _send_all(rows: list[ClaimedRow]) -> dict[int, object]:
    """Send every row; returns seq -> RecordMetadata or the exception that row ended with."""
    producer = producer_get()
    futures = {}
    outcomes: dict[int, object] = {}
    for row in rows:
        try:
            value = row.payload_text.encode()
            futures[row.seq] = producer.send(row.topic, key=row.key.encode(), value=value,
                                             headers=_record_headers(row))
        except Exception as exc:  # noqa: BLE001 - each row's failure is recorded on the row
            outcomes[row.seq] = exc
    if futures:
        try:
            producer.flush(timeout=settings.OUTBOX_CLAIM_TTL / 2)
        except KafkaError as exc:
            logger.warning("producer flush did not complete", extra={"error": repr(exc)})
    for seq, future in futures.items():
        if future.is_done:
            outcomes[seq] = future.value if future.succeeded() else future.exception
        else:
            outcomes[seq] = KafkaError("not acknowledged before the flush timeout")
    return outcomes


def _write_back(*, token: uuid.UUID, rows: list[ClaimedRow], outcomes: dict[int, object],
                result: DrainResult) -> None:
    now = timezone.now()
    published: list[ClaimedRow] = []
    failed: list[ClaimedRow] = []
    released: list[int] = []
    rows_of_key: dict[str, list[ClaimedRow]] = defaultdict(list)
    for row in rows:
        rows_of_key[row.key].append(row)
    for key_rows in rows_of_key.values():
        blocked = False
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
                failed.append(row)
                result.errors.append(row.last_error)
                with trace_context((row.headers or {}).get("traceparent")):
                    logger.warning("outbox send failed", extra={
                        "event_id": str(row.event_id), "event_type": row.type, "topic": row.topic,
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
    seqs = [r.seq for r in rows]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Array subscripts rather than a join with unnest(): the planner misjudges such a
            # join on a freshly filled table and picks a nested loop (quadratic).
            cursor.execute(
                f"UPDATE {table} SET status = 'published', published_at = %(now)s, "
                "kafka_partition = (%(parts)s::integer[])[array_position(%(seqs)s::bigint[], seq)], "
                "kafka_offset = (%(offs)s::bigint[])[array_position(%(seqs)s::bigint[], seq)], "
                "claim_token = NULL, claim_expires_at = NULL "
                "WHERE seq = ANY(%(seqs)s::bigint[]) AND claim_token = %(token)s",
                {"now": now_db, "seqs": seqs, "parts": [r.kafka_partition for r in rows],
                 "offs": [r.kafka_offset for r in rows], "token": token_db})
            return cursor.rowcount
        updated = 0
        for row in rows:
            cursor.execute(
                f"UPDATE {table} SET status = 'published', published_at = %s, kafka_partition = %s, "
                "kafka_offset = %s, claim_token = NULL, claim_expires_at = NULL "
                "WHERE seq = %s AND claim_token = %s",
                [now_db, row.kafka_partition, row.kafka_offset, row.seq, token_db])
            updated += cursor.rowcount
        return updated


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
    """Publish due outbox rows until none is claimable or the time budget is spent."""
    result = DrainResult()
    started = time.monotonic()
    limit = batch_size or settings.OUTBOX_BATCH_SIZE
    with _single_relay_on_sqlite() as may_run:
        if not may_run:
            return result
        while time.monotonic() - started < time_budget_s:
            if max_batches is not None and result.batches >= max_batches:
                break
            token = uuid.uuid4()
            rows = claim_batch(token=token, limit=limit)
            if not rows:
                break
            result.batches += 1
            try:
                outcomes = _send_all(rows)
            except Exception as exc:  # noqa: BLE001 - recorded on every row of the batch
                # The producer itself failed (e.g. no broker to bootstrap from): every row failed.
                producer_reset()
                unavailable = ProducerUnavailable(f"{type(exc).__name__}: {exc}")
                outcomes = {row.seq: unavailable for row in rows}
            if settings.OUTBOX_FAULT_PAUSE_AFTER_SEND:
                # Fault tests kill the relay here: sent and acknowledged, not yet marked.
                logger.warning("paused after send", extra={"rows": len(rows)})
                time.sleep(settings.OUTBOX_FAULT_PAUSE_AFTER_SEND)
            _write_back(token=token, rows=rows, outcomes=outcomes, result=result)
            if result.failed or result.dead:
                break  # let backoff work instead of spinning on a failing broker
    result.seconds = time.monotonic() - started
    if result.batches:
        level = logging.WARNING if result.failed or result.dead else logging.INFO
        logger.log(level, "outbox drain", extra={**result.as_dict(),
                                                 "last_error": result.errors[-1] if result.errors else None})
    return result
