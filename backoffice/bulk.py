"""The batch's writes on PostgreSQL: one statement per table, the rows passed as arrays.

Django's `bulk_create` builds a model instance and prepares every field of every row in Python,
which was most of the back office's time (docs/BENCHMARKS.md, "Back office"). Here each table
gets one `INSERT ... SELECT FROM unnest(arrays)`: psycopg adapts a list per column, the server
builds the rows.

- The inbox insert is `ON CONFLICT DO NOTHING RETURNING event_id`: the ids it returns are the
  batch's new events, in one round trip instead of a SELECT then an INSERT; the same statement
  logs those events (a data-modifying CTE reading the RETURNING rows). A consumer racing on
  the same ids (a rebalance, a zombie) waits on the other's uncommitted rows, then finds them
  (DO NOTHING) once it commits, or inserts them if it rolled back: either way each id is applied
  once.
- The product metrics and the order ledger are upserts: counters add up, stock and the ledger
  keep the highest version, whatever the order the batches commit in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection

from backoffice.contract import IncomingEvent
from backoffice.handlers import Effects
from backoffice.models import EventLog, InboxEntry, OrderLedger, ProductMetrics


def _cursor() -> Any:
    # The driver's own cursor, binding parameters server-side in binary (%b): Django's cursor
    # factory (psycopg's ClientCursor) inlines them into the SQL text, escaping every element
    # of every array in Python, ten times slower. Same connection, same transaction.
    import psycopg

    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def _payload_text(event: IncomingEvent, records: Mapping[tuple[str, int, int], Any] | None) -> str:
    """The payload as JSON text: the record's own bytes when they are UTF-8 (the contract
    parsed them into exactly `raw_payload`), else `raw_payload` serialized again."""
    if records is not None:
        record = records.get((event.topic, event.partition, event.offset))
        value = getattr(record, "value", None)
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass  # UTF-16/32 JSON, which json.loads accepts and jsonb does not
    return json.dumps(event.raw_payload)


def inbox_insert_new(
    *,
    group: str,
    events: Sequence[IncomingEvent],
    now: datetime,
    records: Mapping[tuple[str, int, int], Any] | None = None,
) -> list[IncomingEvent]:
    """Insert the events' ids in the group's inbox, and the new ones in the event log (once per
    event id: every group shares the log), in one statement; returns the events that were not
    in the inbox, in their order. One round trip and one set of arrays for both tables: the
    event log's insert reads the inbox insert's RETURNING rows. What comes back is the
    positions of the events already there (usually none), not the ids of the new ones: reading
    back 500 UUIDs per batch showed in the profile (docs/BACKOFFICE.md)."""
    if not events:
        return []
    inbox, log = InboxEntry._meta.db_table, EventLog._meta.db_table
    with _cursor() as cursor:
        cursor.execute(
            "WITH e AS (SELECT * FROM unnest(%b::uuid[], %b::text[], %b::integer[], %b::text[], %b::text[], "
            "%b::text[], %b::integer[], %b::bigint[], %b::timestamptz[], %b::text[], %b::text[]) "
            "WITH ORDINALITY AS e(event_id, event_type, event_version, aggregate_type, aggregate_id, "
            "topic, p, o, occurred_at, traceparent, payload, n)), "
            f"new AS (INSERT INTO {inbox} (consumer_group, event_id, event_type, topic, "
            '"partition", "offset", occurred_at, handled_at) '
            "SELECT %s, e.event_id, e.event_type, e.topic, e.p, e.o, e.occurred_at, %s FROM e "
            "ON CONFLICT (consumer_group, event_id) DO NOTHING RETURNING event_id), "
            f"logged AS (INSERT INTO {log} (event_id, event_type, event_version, aggregate_type, "
            'aggregate_id, topic, "partition", "offset", occurred_at, received_at, traceparent, payload) '
            "SELECT e.event_id, e.event_type, e.event_version, e.aggregate_type, e.aggregate_id, "
            "e.topic, e.p, e.o, e.occurred_at, %s, e.traceparent, e.payload::jsonb "
            "FROM e JOIN new USING (event_id) ON CONFLICT (event_id) DO NOTHING) "
            "SELECT coalesce(array_agg(e.n::integer), '{}') FROM e "
            "WHERE NOT EXISTS (SELECT FROM new WHERE new.event_id = e.event_id)",
            [
                [e.event_id for e in events],
                [e.event_type for e in events],
                [e.event_version for e in events],
                [e.aggregate_type for e in events],
                [e.aggregate_id for e in events],
                [e.topic for e in events],
                [e.partition for e in events],
                [e.offset for e in events],
                [e.occurred_at for e in events],
                [e.traceparent[:64] for e in events],
                [_payload_text(e, records) for e in events],
                group,
                now,
                now,
            ],
            binary=True,
        )
        row = cursor.fetchone()
    present = set(row[0]) if row else set()  # 1-based positions of the events the inbox holds
    if not present:
        return list(events)
    return [event for n, event in enumerate(events, start=1) if n not in present]


def metrics_upsert(effects: Effects, *, now: datetime) -> list[str]:
    """Counters added and stock of the highest version, every product in one upsert; returns
    the cache keys of the products whose stock this batch set to 0."""
    ids = sorted(set(effects.metrics) | set(effects.stock))
    if not ids:
        return []
    zero = _Zero()
    deltas = [effects.metrics.get(p, zero) for p in ids]
    stock = [effects.stock.get(p) for p in ids]
    table = ProductMetrics._meta.db_table
    with _cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS m (product_id, like_count, view_count, sales_quantity, "
            "sales_amount, stock, stock_version, updated_at) "
            # A version <= 0 is never applied (a new row starts at version 0, as in the ORM path).
            "SELECT e.product_id, e.likes, e.views, e.quantity, e.amount, "
            "CASE WHEN e.stock_version > 0 THEN e.stock END, greatest(e.stock_version, 0), %s "
            "FROM unnest(%b::text[], %b::integer[], %b::integer[], %b::bigint[], %b::numeric[], "
            "%b::integer[], %b::integer[]) "
            "AS e(product_id, likes, views, quantity, amount, stock, stock_version) "
            "ON CONFLICT (product_id) DO UPDATE SET "
            "like_count = m.like_count + excluded.like_count, "
            "view_count = m.view_count + excluded.view_count, "
            "sales_quantity = m.sales_quantity + excluded.sales_quantity, "
            "sales_amount = m.sales_amount + excluded.sales_amount, "
            # An older stock event never overwrites a newer one, whatever order they arrive in.
            "stock = CASE WHEN excluded.stock_version > m.stock_version THEN excluded.stock "
            "ELSE m.stock END, "
            "stock_version = greatest(m.stock_version, excluded.stock_version), "
            "updated_at = excluded.updated_at "
            "RETURNING product_id, stock, stock_version",
            [
                now,
                ids,
                [d.likes for d in deltas],
                [d.views for d in deltas],
                [d.sales_quantity for d in deltas],
                [d.sales_amount for d in deltas],
                [s[1] if s else None for s in stock],
                [s[0] if s else None for s in stock],
            ],
        )
        rows = cursor.fetchall()
    # Zeroed by this batch: its version is the row's now, and the quantity it set is 0.
    return [
        settings.PRODUCT_CACHE_KEY.format(product_id=product_id)
        for product_id, quantity, version in rows
        if quantity == 0 and product_id in effects.stock and effects.stock[product_id][0] == version
    ]


class _Zero:
    likes = views = sales_quantity = 0
    sales_amount = Decimal("0.00")


def ledger_upsert(effects: Effects, *, now: datetime) -> None:
    """The orders' latest state by aggregate_version, then the refunds due, in two statements."""
    table = OrderLedger._meta.db_table
    if effects.ledger:
        ids = sorted(effects.ledger)
        rows = [effects.ledger[o] for o in ids]
        with _cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} AS l (order_id, order_number, user_id, status, original_total, "
                "discount, final_total, event_type, event_id, event_time, aggregate_version, "
                "refund_due, refund_reason, updated_at) "
                "SELECT e.*, 0, '', %s FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
                "%b::numeric[], %b::numeric[], %b::numeric[], %b::text[], %b::uuid[], "
                "%b::timestamptz[], %b::bigint[]) AS e "
                "ON CONFLICT (order_id) DO UPDATE SET order_number = excluded.order_number, "
                "user_id = excluded.user_id, status = excluded.status, "
                "original_total = excluded.original_total, discount = excluded.discount, "
                "final_total = excluded.final_total, event_type = excluded.event_type, "
                "event_id = excluded.event_id, event_time = excluded.event_time, "
                "aggregate_version = excluded.aggregate_version, updated_at = excluded.updated_at "
                "WHERE l.aggregate_version < excluded.aggregate_version",
                [
                    now,
                    ids,
                    [r["order_number"] for r in rows],
                    [r["user_id"] for r in rows],
                    [r["status"] for r in rows],
                    [r["original_total"] for r in rows],
                    [r["discount"] for r in rows],
                    [r["final_total"] for r in rows],
                    [r["event_type"] for r in rows],
                    [r["event_id"] for r in rows],
                    [r["event_time"] for r in rows],
                    [r["aggregate_version"] for r in rows],
                ],
            )
    if effects.refunds:
        # A refund may come before any state of its order (a redrive, a replay of one topic):
        # the row is created with placeholder state at version 0, which any state overwrites.
        ids = sorted(effects.refunds)
        refunds = [effects.refunds[o] for o in ids]
        with _cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} AS l (order_id, order_number, user_id, status, original_total, "
                "discount, final_total, event_type, event_id, event_time, aggregate_version, "
                "refund_due, refund_reason, updated_at) "
                "SELECT e.order_id, '', e.user_id, '', 0, 0, 0, 'PaymentRefundRequired', e.event_id, "
                "e.event_time, 0, e.amount, left(e.reason, 200), %s "
                "FROM unnest(%b::text[], %b::text[], %b::uuid[], %b::timestamptz[], %b::numeric[], "
                "%b::text[]) AS e(order_id, user_id, event_id, event_time, amount, reason) "
                "ON CONFLICT (order_id) DO UPDATE SET refund_due = l.refund_due + excluded.refund_due, "
                "refund_reason = excluded.refund_reason, updated_at = excluded.updated_at",
                [
                    now,
                    ids,
                    [r["user_id"] for r in refunds],
                    [r["event_id"] for r in refunds],
                    [r["event_time"] for r in refunds],
                    [r["amount"] for r in refunds],
                    [r["reason"] for r in refunds],
                ],
            )
