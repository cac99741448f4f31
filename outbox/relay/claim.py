"""Claim: pick the next rows this relay may send and lease them, in one short transaction.

The rules (per-key order, leases, what holds a key back) are in docs/OUTBOX.md, "Claim".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from outbox.models import OutboxEvent
from outbox.relay.rows import SEND_FIELDS, ClaimedRow, unfinished_statuses as _unfinished_statuses


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

