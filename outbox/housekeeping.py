"""Retention of published rows and the outbox's health figures."""

from __future__ import annotations

import logging
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
