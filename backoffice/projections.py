"""One batch, one transaction: inbox, projections, event log and dead letters together.

`batch_apply` is where "no effect applied twice" is decided: the batch's event ids not yet in
the inbox of this consumer group are inserted there, and only those events' effects are
applied, in the same transaction. Two consumers racing on the same events (a rebalance, a
zombie) collide on the inbox's unique constraint, and the loser's whole transaction rolls back
and is retried, then finds the ids already handled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from backoffice.contract import IncomingEvent
from backoffice.handlers import Effects, event_handle
from backoffice.models import DeadLetter, EventLog, InboxEntry, OrderLedger, ProductMetrics


@dataclass(frozen=True)
class PoisonRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    error: str

    def headers_as_json(self) -> list[list[str]]:
        return [[name, (raw or b"").decode("latin-1")] for name, raw in self.headers]


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    cache_keys_to_delete: list[str] = field(default_factory=list)


def _effects_apply(effects: Effects) -> list[str]:
    """Write the batch's effects in bulk; returns the product cache keys to invalidate."""
    product_ids = set(effects.metrics) | set(effects.stock)
    if product_ids:
        ProductMetrics.objects.bulk_create([ProductMetrics(product_id=p) for p in sorted(product_ids)],
                                           ignore_conflicts=True)
    for product_id in sorted(effects.metrics):
        delta = effects.metrics[product_id]
        changes = {}
        if delta.likes:
            changes["like_count"] = F("like_count") + delta.likes
        if delta.views:
            changes["view_count"] = F("view_count") + delta.views
        if delta.sales_quantity:
            changes["sales_quantity"] = F("sales_quantity") + delta.sales_quantity
        if delta.sales_amount:
            changes["sales_amount"] = F("sales_amount") + delta.sales_amount
        if changes:
            ProductMetrics.objects.filter(product_id=product_id).update(**changes, updated_at=timezone.now())
    cache_keys = []
    for product_id, (version, quantity) in sorted(effects.stock.items()):
        # An older event never overwrites a newer one, whatever order they arrive in.
        updated = ProductMetrics.objects.filter(product_id=product_id, stock_version__lt=version).update(
            stock=quantity, stock_version=version, updated_at=timezone.now())
        if updated and quantity == 0:
            cache_keys.append(settings.PRODUCT_CACHE_KEY.format(product_id=product_id))
    for order_id, row in sorted(effects.ledger.items()):
        # Latest state by event time: overwrite an older state, or insert the first one.
        updated = OrderLedger.objects.filter(order_id=order_id, event_time__lte=row["event_time"]).update(**row)
        if not updated:
            OrderLedger.objects.bulk_create([OrderLedger(order_id=order_id, **row)], ignore_conflicts=True)
    return cache_keys


def batch_apply(*, group: str, events: list[IncomingEvent], poison: list[PoisonRecord],
                now: datetime | None = None) -> BatchOutcome:
    """Apply a batch once: new event ids only, all in one transaction. Raises on DB errors."""
    now = now or timezone.now()
    outcome = BatchOutcome()
    unique: dict = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    with transaction.atomic():
        seen = set(InboxEntry.objects.filter(consumer_group=group, event_id__in=list(unique))
                   .values_list("event_id", flat=True))
        new_events = [event for event_id, event in unique.items() if event_id not in seen]
        outcome.duplicates = len(events) - len(new_events)
        if new_events:
            InboxEntry.objects.bulk_create([
                InboxEntry(consumer_group=group, event_id=e.event_id, event_type=e.event_type,
                           topic=e.topic, partition=e.partition, offset=e.offset,
                           occurred_at=e.occurred_at, handled_at=now)
                for e in new_events
            ], batch_size=1000)
            effects = Effects()
            for event in new_events:
                event_handle(event, effects)
            outcome.cache_keys_to_delete = _effects_apply(effects)
            EventLog.objects.bulk_create([
                EventLog(event_id=e.event_id, event_type=e.event_type, event_version=e.event_version,
                         aggregate_type=e.aggregate_type, aggregate_id=e.aggregate_id, topic=e.topic,
                         partition=e.partition, offset=e.offset, occurred_at=e.occurred_at,
                         received_at=now, traceparent=e.traceparent[:64], payload=e.raw_payload)
                for e in new_events
            ], batch_size=1000, ignore_conflicts=True)
        if poison:
            DeadLetter.objects.bulk_create([
                DeadLetter(consumer_group=group, topic=p.topic, partition=p.partition, offset=p.offset,
                           key=p.key, value=p.value, headers=p.headers_as_json(), error=p.error[:5000])
                for p in poison
            ], ignore_conflicts=True)
        outcome.applied = len(new_events)
        outcome.dead_lettered = len(poison)
    return outcome


def projections_reset(*, group: str) -> None:
    """Empty the projections and this group's inbox (replay starts from nothing)."""
    with transaction.atomic():
        InboxEntry.objects.filter(consumer_group=group).delete()
        ProductMetrics.objects.all().delete()
        OrderLedger.objects.all().delete()
        EventLog.objects.all().delete()


def dead_letters_open(*, group: str | None = None):  # noqa: ANN201
    letters = DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
    return letters.filter(Q(consumer_group=group)) if group else letters
