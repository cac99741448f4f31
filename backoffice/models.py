"""The back office's own tables: the inbox that makes effects happen once, the projections it
feeds, and the dead letters it could not handle. It knows only the event contract
(docs/EVENTS.md): ids are the strings the events carry, never foreign keys to the domain."""

from __future__ import annotations

from decimal import Decimal

from django.db import models


class InboxEntry(models.Model):
    """One handled event of one consumer group, written in the transaction of its effect."""

    consumer_group = models.CharField(max_length=200)
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=100)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    occurred_at = models.DateTimeField()
    handled_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name_plural = "inbox entries"
        constraints = [
            models.UniqueConstraint(fields=["consumer_group", "event_id"], name="inbox_event_once_per_group")
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class ProductMetrics(models.Model):
    product_id = models.CharField(max_length=64, unique=True)
    like_count = models.IntegerField(default=0)
    view_count = models.IntegerField(default=0)
    # Sums of every sale: wider than the values the contract lets one record carry (an integer,
    # numeric(14,2)), so that no sum of valid records overflows. With the record's own width,
    # one record at the bound made every later sale of the product overflow and be dead-lettered.
    sales_quantity = models.BigIntegerField(default=0)
    sales_amount = models.DecimalField(max_digits=20, decimal_places=2, default=Decimal("0.00"))
    stock = models.IntegerField(null=True, blank=True)
    stock_version = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "product metrics"
        ordering = ["product_id"]

    def __str__(self) -> str:
        return f"metrics of product {self.product_id}"


class OrderLedger(models.Model):
    """The data platform's record of an order: the state of its highest aggregate_version (the
    order's own sequence, never a clock), and the money due back on it."""

    order_id = models.CharField(max_length=64, unique=True)
    order_number = models.CharField(max_length=64)
    user_id = models.CharField(max_length=64)
    status = models.CharField(max_length=20)
    original_total = models.DecimalField(max_digits=14, decimal_places=2)
    discount = models.DecimalField(max_digits=14, decimal_places=2)
    final_total = models.DecimalField(max_digits=14, decimal_places=2)
    event_type = models.CharField(max_length=100)
    event_id = models.UUIDField()
    event_time = models.DateTimeField()
    # The aggregate_version of the event whose state the row holds; 0 for a row that so far
    # knows only a refund (its state fields are placeholders until the order's events come).
    aggregate_version = models.BigIntegerField(default=0)
    refund_due = models.DecimalField(max_digits=20, decimal_places=2, default=Decimal("0.00"))  # a sum, as above
    refund_reason = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-event_time"]

    def __str__(self) -> str:
        return f"{self.order_number} {self.status}"


class EventLog(models.Model):
    """Audit: every event received, once per event id, with where it was read."""

    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=100)
    event_version = models.IntegerField()
    aggregate_type = models.CharField(max_length=100)
    aggregate_id = models.CharField(max_length=64)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    traceparent = models.CharField(max_length=64, blank=True, default="")
    payload = models.JSONField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["aggregate_type", "aggregate_id"], name="eventlog_aggregate_idx"),
            models.Index(fields=["event_type"], name="eventlog_type_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class DeadLetter(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        REDRIVEN = "redriven"

    consumer_group = models.CharField(max_length=200)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    key = models.BinaryField(null=True, blank=True)
    value = models.BinaryField(null=True, blank=True)
    headers = models.JSONField(default=list, help_text="[[name, value as latin-1 text], ...]")
    error = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    redriven_at = models.DateTimeField(null=True, blank=True)
    # SHA-256 of the record's key, value and headers (PoisonRecord.digest): with its coordinates,
    # what makes a letter once per record. The coordinates alone are not enough: a recreated
    # topic starts its offsets again, and its record at an offset that already has a letter
    # would be dropped as a redelivery of the old one.
    # db_default: a consumer of the release before, still running after `migrate`, inserts
    # letters without it.
    record_digest = models.CharField(max_length=64, default="", db_default="", editable=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["consumer_group", "topic", "partition", "offset", "record_digest"],
                name="deadletter_once_per_record",
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"
