"""The outbox table: one row per event, written in the transaction of the change it describes.

Column names follow Debezium's outbox event router defaults (`id`, `aggregatetype`,
`aggregateid`, `type`, `payload`), so change data capture can replace the polling relay without
touching the application (see docs/OPERATIONS.md).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class OutboxEvent(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PUBLISHED = "published"
        DEAD = "dead"

    # `seq` orders the events of one key: services lock the aggregate row before recording, so
    # for one key the insert order is the commit order.
    seq = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False, db_column="id")
    topic = models.CharField(max_length=249)
    key = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    event_version = models.PositiveIntegerField(default=1)
    aggregatetype = models.CharField(max_length=100)
    aggregateid = models.CharField(max_length=255)
    # Per-aggregate sequence number (the `aggregate_version` header); null for events that commute.
    aggregate_version = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField()
    headers = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    available_at = models.DateTimeField(db_index=False)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    kafka_partition = models.IntegerField(null=True, blank=True)
    kafka_offset = models.BigIntegerField(null=True, blank=True)
    # The lease of the relay that is sending the row; the write-back is fenced by the token, so
    # a relay whose lease expired (and whose rows another relay took over) cannot mark them.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claim_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["seq"]
        indexes = [
            # The drain reads only pending rows, oldest first; a partial index keeps it small
            # when the table holds millions of published rows, and its `seq` order lets the
            # claim stop after a batch instead of sorting the whole backlog.
            models.Index(
                fields=["seq"],
                name="outbox_pending_seq_idx",
                condition=Q(status="pending"),
            ),
            # The fair share of each topic in a claim: a topic's pending rows oldest first, however
            # many rows of other topics come before them.
            models.Index(
                fields=["topic", "seq"],
                name="outbox_pending_topic_seq_idx",
                condition=Q(status="pending"),
            ),
            models.Index(
                fields=["key", "seq"],
                name="outbox_unfinished_key_idx",
                condition=~Q(status="published"),
            ),
            # Retention and the published-per-minute figures read published rows by time;
            # partial, so that recording a (pending) row does not touch it.
            models.Index(fields=["published_at"], name="outbox_published_at_idx", condition=Q(status="published")),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.aggregatetype}:{self.aggregateid} ({self.status})"
