"""One batch, one transaction: inbox, projections, event log and dead letters together.

`batch_apply` is where "no effect applied twice" is decided: the batch's event ids not yet in
the inbox of this consumer group are inserted there, and only those events' effects are
applied, in the same transaction. Two consumers racing on the same events (a rebalance, a
zombie) collide on the inbox's unique constraint, and the loser's whole transaction rolls back
and is retried, then finds the ids already handled.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from backoffice import bulk
from backoffice.contract import IncomingEvent
from backoffice.handlers import Effects, event_handle
from backoffice.models import DeadLetter, EventLog, InboxEntry, OrderLedger, ProductMetrics

# The start of the error of a record the database refused (backoffice/isolation.py).
DATABASE_REFUSED = "refused by the database"


@dataclass(frozen=True)
class PoisonRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, object]]  # as consumed: bytes or None (a null column); anything else is str()-ed
    error: str

    def error_kind(self) -> str:
        """A bounded label of the reason, for the metrics."""
        return "DatabaseRefused" if self.error.startswith(DATABASE_REFUSED) else "ContractViolation"

    def digest(self) -> str:
        """SHA-256 of the key, value and headers (each length-prefixed): the same record
        delivered again has the same, another record at the same offset (a recreated topic)
        another."""
        found = hashlib.sha256()
        for part in (self.key, self.value, *(item for name, raw in self.headers for item in (name, raw))):
            if part is None:
                found.update(b"\xff" * 8)  # a null: no length prefix looks like it
            else:
                data = part if isinstance(part, bytes) else str(part).encode()
                found.update(len(data).to_bytes(8, "big") + data)
        return found.hexdigest()

    def headers_as_json(self) -> list[list[str]]:
        # jsonb holds no NUL: such a byte is kept as four characters, backslash x 0 0 (the
        # `.dlq` copy on Kafka keeps the exact bytes).
        return [
            [
                str(name).replace("\x00", "\\x00"),
                (raw if isinstance(raw, bytes) else str(raw or "").encode()).decode("latin-1").replace("\x00", "\\x00"),
            ]
            for name, raw in self.headers
        ]


@dataclass
class TopicCounts:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)  # error kind -> records


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    cache_keys_to_delete: list[str] = field(default_factory=list)
    by_topic: dict[str, TopicCounts] = field(default_factory=dict)
    applied_events: list[IncomingEvent] = field(default_factory=list)


def _effects_apply(effects: Effects) -> list[str]:
    """Write the batch's effects in bulk; returns the product cache keys to invalidate."""
    product_ids = sorted(set(effects.metrics) | set(effects.stock))
    if product_ids:
        ProductMetrics.objects.bulk_create([ProductMetrics(product_id=p) for p in product_ids], ignore_conflicts=True)
    if connection.vendor == "postgresql":
        _counters_apply_postgresql(effects)
        stock_zeroed = _stock_apply_postgresql(effects)
    else:
        _counters_apply_portable(effects)
        stock_zeroed = _stock_apply_portable(effects)
    _ledger_apply(effects)
    return [settings.PRODUCT_CACHE_KEY.format(product_id=p) for p in stock_zeroed]


def _counters_apply_portable(effects: Effects) -> None:
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


def _counters_apply_postgresql(effects: Effects) -> None:
    """Every product's counters in one UPDATE: the batch's deltas as arrays, looked up by
    position (not a join, whose plan goes quadratic on stale statistics)."""
    ids = sorted(p for p, d in effects.metrics.items() if d.likes or d.views or d.sales_quantity or d.sales_amount)
    if not ids:
        return
    deltas = [effects.metrics[p] for p in ids]
    position = "array_position(%(ids)s::text[], product_id::text)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ProductMetrics._meta.db_table} SET "
            f"like_count = like_count + (%(likes)s::integer[])[{position}], "
            f"view_count = view_count + (%(views)s::integer[])[{position}], "
            f"sales_quantity = sales_quantity + (%(quantities)s::integer[])[{position}], "
            f"sales_amount = sales_amount + (%(amounts)s::numeric[])[{position}], "
            "updated_at = %(now)s WHERE product_id = ANY(%(ids)s::text[])",
            {
                "ids": ids,
                "likes": [d.likes for d in deltas],
                "views": [d.views for d in deltas],
                "quantities": [d.sales_quantity for d in deltas],
                "amounts": [d.sales_amount for d in deltas],
                "now": timezone.now(),
            },
        )


def _stock_apply_portable(effects: Effects) -> list[str]:
    zeroed = []
    for product_id, (version, quantity) in sorted(effects.stock.items()):
        # An older event never overwrites a newer one, whatever order they arrive in.
        updated = ProductMetrics.objects.filter(product_id=product_id, stock_version__lt=version).update(
            stock=quantity, stock_version=version, updated_at=timezone.now()
        )
        if updated and quantity == 0:
            zeroed.append(product_id)
    return zeroed


def _stock_apply_postgresql(effects: Effects) -> list[str]:
    """Stock of the highest version, for every product in one UPDATE; returns those now at 0."""
    if not effects.stock:
        return []
    ids = sorted(effects.stock)
    position = "array_position(%(ids)s::text[], product_id::text)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ProductMetrics._meta.db_table} SET "
            f"stock = (%(quantities)s::integer[])[{position}], "
            f"stock_version = (%(versions)s::integer[])[{position}], updated_at = %(now)s "
            f"WHERE product_id = ANY(%(ids)s::text[]) AND stock_version < (%(versions)s::integer[])[{position}] "
            "RETURNING product_id, stock",
            {
                "ids": ids,
                "quantities": [effects.stock[p][1] for p in ids],
                "versions": [effects.stock[p][0] for p in ids],
                "now": timezone.now(),
            },
        )
        return [product_id for product_id, quantity in cursor.fetchall() if quantity == 0]


def _ledger_apply(effects: Effects) -> None:
    """Latest state by the order's aggregate_version: insert the orders seen for the first time
    in one statement; overwrite an existing row only from a higher version. Then add the
    refunds due."""
    if effects.ledger:
        existing = dict(
            OrderLedger.objects.filter(order_id__in=list(effects.ledger)).values_list("order_id", "aggregate_version")
        )
        OrderLedger.objects.bulk_create(
            [
                OrderLedger(order_id=order_id, **row)
                for order_id, row in sorted(effects.ledger.items())
                if order_id not in existing
            ],
            ignore_conflicts=True,
        )
        for order_id, row in sorted(effects.ledger.items()):
            if order_id in existing and existing[order_id] < row["aggregate_version"]:
                OrderLedger.objects.filter(order_id=order_id, aggregate_version__lt=row["aggregate_version"]).update(
                    **row
                )
    if effects.refunds:
        # A refund may come before any state of its order (a redrive, a replay of one topic):
        # the row is created with placeholder state at version 0, which any state overwrites.
        OrderLedger.objects.bulk_create(
            [
                OrderLedger(
                    order_id=order_id,
                    order_number="",
                    user_id=refund["user_id"],
                    status="",
                    original_total=Decimal("0.00"),
                    discount=Decimal("0.00"),
                    final_total=Decimal("0.00"),
                    event_type="PaymentRefundRequired",
                    event_id=refund["event_id"],
                    event_time=refund["event_time"],
                    aggregate_version=0,
                )
                for order_id, refund in sorted(effects.refunds.items())
            ],
            ignore_conflicts=True,
        )
        for order_id, refund in sorted(effects.refunds.items()):
            OrderLedger.objects.filter(order_id=order_id).update(
                refund_due=F("refund_due") + refund["amount"], refund_reason=refund["reason"][:200]
            )


def batch_apply(
    *,
    group: str,
    events: list[IncomingEvent],
    poison: list[PoisonRecord],
    now: datetime | None = None,
    records: Mapping[tuple[str, int, int], Any] | None = None,
) -> BatchOutcome:
    """Apply a batch once: new event ids only, all in one transaction. Raises on DB errors.

    `records` (the consumed records by (topic, partition, offset)) lets the event log store
    each payload's own bytes rather than serialize it again."""
    now = now or timezone.now()
    outcome = BatchOutcome()
    unique: dict[uuid.UUID, IncomingEvent] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # The new events are in the event log too: one statement (backoffice/bulk.py).
            new_events = bulk.inbox_insert_new(group=group, events=list(unique.values()), now=now, records=records)
        else:
            new_events = _inbox_insert_portable(group, unique, now)
        if new_events:
            effects = Effects()
            for event in new_events:
                event_handle(event, effects)
            if connection.vendor == "postgresql":
                outcome.cache_keys_to_delete = bulk.metrics_upsert(effects, now=now)
                bulk.ledger_upsert(effects, now=now)
            else:
                outcome.cache_keys_to_delete = _effects_apply(effects)
                _event_log_insert_portable(new_events, now)
        if poison:
            DeadLetter.objects.bulk_create(
                [
                    DeadLetter(
                        consumer_group=group,
                        topic=p.topic,
                        partition=p.partition,
                        offset=p.offset,
                        key=p.key,
                        value=p.value,
                        headers=p.headers_as_json(),
                        error=p.error[:5000].replace("\x00", "\\x00"),
                        record_digest=p.digest(),
                    )
                    for p in poison
                ],
                ignore_conflicts=True,
            )
    outcome.applied = len(new_events)
    outcome.duplicates = len(events) - len(new_events)
    outcome.dead_lettered = len(poison)
    outcome.applied_events = new_events
    _count_by_topic(outcome, events, new_events, poison)
    return outcome


def _count_by_topic(
    outcome: BatchOutcome, events: list[IncomingEvent], new_events: list[IncomingEvent], poison: list[PoisonRecord]
) -> None:
    """Per-topic counts for the metrics (a batch spans the catalog and the order topics)."""
    by_topic = outcome.by_topic
    for event in events:
        counts = by_topic.get(event.topic)
        if counts is None:
            counts = by_topic[event.topic] = TopicCounts()
        counts.duplicates += 1  # corrected below for the applied ones
    for event in new_events:
        counts = by_topic[event.topic]
        counts.duplicates -= 1
        counts.applied += 1
    for letter in poison:
        counts = by_topic.get(letter.topic)
        if counts is None:
            counts = by_topic[letter.topic] = TopicCounts()
        kind = letter.error_kind()
        counts.dead_lettered[kind] = counts.dead_lettered.get(kind, 0) + 1


def _inbox_insert_portable(group: str, unique: dict[uuid.UUID, IncomingEvent], now: datetime) -> list[IncomingEvent]:
    seen = set(
        InboxEntry.objects.filter(consumer_group=group, event_id__in=list(unique)).values_list("event_id", flat=True)
    )
    new_events = [event for event_id, event in unique.items() if event_id not in seen]
    InboxEntry.objects.bulk_create(
        [
            InboxEntry(
                consumer_group=group,
                event_id=e.event_id,
                event_type=e.event_type,
                topic=e.topic,
                partition=e.partition,
                offset=e.offset,
                occurred_at=e.occurred_at,
                handled_at=now,
            )
            for e in new_events
        ],
        batch_size=1000,
    )
    return new_events


def _event_log_insert_portable(new_events: list[IncomingEvent], now: datetime) -> None:
    EventLog.objects.bulk_create(
        [
            EventLog(
                event_id=e.event_id,
                event_type=e.event_type,
                event_version=e.event_version,
                aggregate_type=e.aggregate_type,
                aggregate_id=e.aggregate_id,
                topic=e.topic,
                partition=e.partition,
                offset=e.offset,
                occurred_at=e.occurred_at,
                received_at=now,
                traceparent=e.traceparent[:64],
                payload=e.raw_payload,
            )
            for e in new_events
        ],
        batch_size=1000,
        ignore_conflicts=True,
    )


def projections_reset(*, group: str) -> None:
    """Empty the projections and the inbox, every group's (replay starts from nothing; `group`
    replays). An inbox row says its event's effect is in the projections: another group's rows
    left behind would skip those events when that group consumes again."""
    with transaction.atomic():
        InboxEntry.objects.all().delete()
        ProductMetrics.objects.all().delete()
        OrderLedger.objects.all().delete()
        EventLog.objects.all().delete()


def dead_letters_open(*, group: str | None = None) -> QuerySet[DeadLetter]:
    letters = DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
    return letters.filter(Q(consumer_group=group)) if group else letters
