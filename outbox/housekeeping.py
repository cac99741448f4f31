"""Retention of published rows and the outbox's health figures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone

from outbox.models import OutboxEvent
from outbox.relay.write_back import clock_now

logger = logging.getLogger(__name__)


def outbox_purge_published(*, older_than: timedelta | None = None, chunk_size: int = 5000) -> int:
    """Delete published rows older than OUTBOX_RETENTION, in bounded chunks (short locks)."""
    cutoff = timezone.now() - (older_than or settings.OUTBOX_RETENTION)
    deleted_total = 0
    while True:
        seqs = list(
            OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED, published_at__lt=cutoff)
            .order_by("seq")
            .values_list("seq", flat=True)[:chunk_size]
        )
        if not seqs:
            break
        deleted, _ = OutboxEvent.objects.filter(seq__in=seqs).delete()
        deleted_total += deleted
    if deleted_total:
        logger.info("outbox purge", extra={"deleted": deleted_total})
    return deleted_total


@dataclass(frozen=True)
class TopicStatus:
    topic: str
    pending: int
    dead: int
    oldest_pending_at: datetime | None
    published_last_minute: int

    def oldest_pending_age_s(self, now: datetime) -> float | None:
        return (now - self.oldest_pending_at).total_seconds() if self.oldest_pending_at else None


def outbox_status() -> list[TopicStatus]:
    minute_ago = timezone.now() - timedelta(minutes=1)
    rows = (
        OutboxEvent.objects.values("topic")
        .annotate(
            pending=Count("seq", filter=Q(status=OutboxEvent.Status.PENDING)),
            dead=Count("seq", filter=Q(status=OutboxEvent.Status.DEAD)),
            oldest_pending_at=Min("created_at", filter=Q(status=OutboxEvent.Status.PENDING)),
            published_last_minute=Count(
                "seq", filter=Q(status=OutboxEvent.Status.PUBLISHED, published_at__gte=minute_ago)
            ),
        )
        .order_by("topic")
    )
    return [TopicStatus(**row) for row in rows]


@dataclass
class Republished:
    rows: int  # put back to pending
    still_leased: int  # leases taken before the call and not written back when the wait ended
    started_at: datetime  # on the clock the claims read


def outbox_republish(
    *, topic: str, since: datetime | None = None, on_wait: Callable[[int, float], None] | None = None
) -> Republished:
    """The published rows of `topic` (published at or after `since`) back to pending, to be sent
    again: the recovery of a topic deleted by mistake, whose records went with it (OPERATIONS.md).
    Consumers absorb what they had applied (the back office's inbox). Returns how many.

    First waits, at most OUTBOX_CLAIM_TTL and a second, until every lease on the topic's rows
    taken before the call is written back, released or expired: a batch the old topic
    acknowledged just before it went is marked published by that write-back, after the call
    began, and a requeue that did not wait would miss it (a fault campaign on 3 brokers lost 52
    events so). A lease that runs out unwritten leaves its rows pending, to be sent anyway, but
    a relay paused past its lease can still write them back as published after this (the
    write-back is fenced by the claim's token, not its time): `still_leased` says how many
    were left, for the caller to say so. The relays' OUTBOX_CLAIM_TTL is assumed to be this
    process's. `on_wait(rows, seconds_left)` is told while it waits.
    """
    started = clock_now()
    ttl = float(settings.OUTBOX_CLAIM_TTL)
    leased = OutboxEvent.objects.filter(
        topic=topic, claim_token__isnull=False, claim_expires_at__lte=started + timedelta(seconds=ttl)
    )
    deadline = time.monotonic() + ttl + 1
    while (count := leased.count()) and time.monotonic() < deadline:
        if on_wait is not None:
            on_wait(count, deadline - time.monotonic())
        time.sleep(0.2)
    published = OutboxEvent.objects.filter(topic=topic, status=OutboxEvent.Status.PUBLISHED)
    if since is not None:
        published = published.filter(published_at__gte=since)
    # One statement: every older row of a key pending again at once, so the claims' per-key
    # order sends them ahead of the key's newer rows (in chunks, a newer row could go first).
    rows = published.update(
        status=OutboxEvent.Status.PENDING,
        attempts=0,
        available_at=clock_now(),
        claim_token=None,
        claim_expires_at=None,
    )
    return Republished(rows=rows, still_leased=count, started_at=started)


def outbox_requeue(*, event_ids: list[str] | None = None) -> int:
    """Dead rows back to pending with a fresh attempt count; all of them without `event_ids`."""
    dead = OutboxEvent.objects.filter(status=OutboxEvent.Status.DEAD)
    if event_ids is not None:
        dead = dead.filter(event_id__in=event_ids)
    return dead.update(
        status=OutboxEvent.Status.PENDING,
        attempts=0,
        available_at=clock_now(),  # the clock the claims read (the database's on PostgreSQL)
        claim_token=None,
        claim_expires_at=None,
    )
