"""Recording events: the only outbox API the domain apps use."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Field

from commerce.observability.telemetry import outbox_record_span, telemetry_enabled
from commerce.tracing import traceparent_get
from outbox.envelope import DomainEvent
from outbox.kick import relay_kick_on_commit
from outbox.models import OutboxEvent
from outbox.schema_check import event_schema_check
from outbox.wakeup import CHANNEL, wakeup_mode


class OutboxOutsideTransaction(RuntimeError):
    """Recording in autocommit would commit the event apart from the change it describes."""


# The row's own values, then constants: a new row is pending, never tried.
_COLUMNS = (
    "event_id",
    "topic",
    "key",
    "type",
    "event_version",
    "aggregatetype",
    "aggregateid",
    "aggregate_version",
    "payload",
    "headers",
    "occurred_at",
    "created_at",
    "available_at",
)
_CONSTANTS = {"status": "'pending'", "attempts": "0", "last_error": "''"}
# On PostgreSQL a new row is due from the database's clock, the one the relays' claims read
# (outbox/relay/claim.py): an application host whose clock runs ahead would otherwise record
# rows that no relay takes before its clock's time. SQLite is one host: its clock.
_COLUMNS_POSTGRESQL = _COLUMNS[:-1]
_CONSTANTS_POSTGRESQL = {**_CONSTANTS, "available_at": "statement_timestamp()"}


def _field_of(name: str) -> Field[Any, Any]:
    """An outbox column's field (`get_field` may also return a reverse relation; the outbox has none)."""
    found = OutboxEvent._meta.get_field(name)
    if not isinstance(found, Field):
        raise TypeError(f"OutboxEvent.{name} is a relation, not a column")
    return found


def _column(name: str) -> str:
    column = _field_of(name).column
    if column is None:
        raise TypeError(f"OutboxEvent.{name} has no column")
    return column


def _insert_sql(rows: int, *, postgresql: bool) -> str:
    meta = OutboxEvent._meta
    values, constants = (_COLUMNS_POSTGRESQL, _CONSTANTS_POSTGRESQL) if postgresql else (_COLUMNS, _CONSTANTS)
    columns = ", ".join(_column(name) for name in (*values, *constants))
    placeholders = "(" + ", ".join(["%s"] * len(values) + list(constants.values())) + ")"
    return f"INSERT INTO {meta.db_table} ({columns}) VALUES " + ", ".join([placeholders] * rows)


# (on PostgreSQL, rows) -> the INSERT of that many rows.
_INSERT_SQL = {
    (postgresql, rows): _insert_sql(rows, postgresql=postgresql) for postgresql in (False, True) for rows in range(1, 9)
}
# PostgreSQL with the NOTIFY wake-up: the same INSERT as a data-modifying CTE whose statement
# notifies the relay loop, so the wake-up costs no round trip of its own. PostgreSQL delivers
# the notification at commit (never on rollback, nor for a rolled-back savepoint) and folds
# identical ones of a transaction into one. The payload is "<seq> <event id>" of the statement's
# first row: the loop's quick claims start at that seq (a backlog of rows held back by their
# keys is not read on every wake-up), and logs the event id.
_INSERT_NOTIFY_SQL = {
    rows: f"WITH _outbox_rows AS ({sql} RETURNING {OutboxEvent._meta.pk.column}) "
    f"SELECT pg_notify('{CHANNEL}', (SELECT min({OutboxEvent._meta.pk.column}) FROM _outbox_rows) || ' ' || %s)"
    for (postgresql, rows), sql in _INSERT_SQL.items()
    if postgresql
}


class _SavepointMarker:
    """A no-op on-commit callback: Django drops it when the savepoint it was registered in rolls
    back, which is how a waiting row learns that the change it describes was undone."""

    def __call__(self) -> None:
        pass


@dataclass
class _Batch:
    depth: int  # len(connection.savepoint_ids) inside the block: its atomic nesting level
    rows: list[tuple[list[Any], _SavepointMarker | None]] = field(default_factory=list)


_local = threading.local()


def _batches() -> dict[str, _Batch]:
    """The open batch of each database alias, in this thread (at most one: nested blocks join)."""
    if not hasattr(_local, "batches"):
        _local.batches = {}
    batches: dict[str, _Batch] = _local.batches
    return batches


@contextmanager
def outbox_atomic(using: str = "default") -> Iterator[None]:
    """`transaction.atomic()` whose outbox rows are written by one INSERT at the end of the block.

    For services that record several events in one transaction (an order and the stock of each
    of its lines): one round trip to the database instead of one per event. The rows are written
    inside the block, in recording order, so they commit or roll back with it exactly as
    unbatched rows would. A row recorded in a nested atomic block that rolls back on its own (a
    savepoint) is left out, as Django leaves out that block's on-commit callbacks; a nested
    `outbox_atomic()` joins the enclosing block's batch.
    """
    with transaction.atomic(using=using):
        batches = _batches()
        if using in batches:
            yield
            return
        connection = connections[using]
        batch = batches[using] = _Batch(depth=len(connection.savepoint_ids))
        try:
            yield
            if not connection.needs_rollback:  # otherwise the block rolls back: nothing to write
                _insert(_surviving_rows(batch, connection), connection, using=using)
        finally:
            del batches[using]


def _surviving_rows(batch: _Batch, connection: Any) -> list[list[Any]]:
    if all(marker is None for _, marker in batch.rows):
        return [row for row, _ in batch.rows]
    # `run_on_commit` holds the callbacks of savepoints that were not rolled back.
    registered = {id(callback) for _, callback, _ in connection.run_on_commit}
    return [row for row, marker in batch.rows if marker is None or id(marker) in registered]


def _recording_cursor(connection: Any) -> Any:
    """The cursor the INSERT goes through: on PostgreSQL with psycopg 3, one that prepares it.

    Django binds parameters on the client and never prepares, so by default every recording
    sends its rows as literals in a long statement that PostgreSQL parses and plans again: a
    third of the outbox's cost on an order (bench/record.py). A server-side binding cursor that
    prepares its statement (psycopg's protocol-level prepared statement, one per statement text
    and parameter types, kept per connection) skips both. It is still Django's cursor wrapper,
    so query logging and execute wrappers see the statement. OUTBOX_RECORD_PREPARED=false keeps
    Django's own cursor, for a pooler that does not keep protocol-level prepared statements.
    """
    if not (settings.OUTBOX_RECORD_PREPARED and connection.vendor == "postgresql"):
        return connection.cursor()
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return connection.cursor()
    connection.validate_thread_sharing()
    connection.ensure_connection()
    cursor = _preparing_cursor_class()(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)


_PREPARE_ONLY_WHEN_ASKED = 2**31  # a count of executions no statement reaches


@functools.cache
def _preparing_cursor_class() -> type:
    import psycopg

    class PreparingCursor(psycopg.Cursor[Any]):
        """Prepares what it executes, and nothing else on the connection is prepared because of it.

        Django connects with `prepare_threshold=None`, which turns psycopg's preparing off even
        for a statement that asks; the threshold is lifted for this execution only.

        psycopg keeps one prepared statement per statement text and parameter types, and types
        an int int2, int4, int8 or numeric by its size. Ints are sent as text instead, untyped
        like None and str, and take their column's type: one statement serves every value (an
        aggregate version of 7, of 70,000 or none), where each new combination of types would
        cost a statement and an extra round trip to prepare it.
        """

        def execute(
            self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
        ) -> Any:
            if params is not None:
                params = [str(value) if type(value) is int else value for value in params]
            connection = self.connection
            threshold = connection.prepare_threshold
            if threshold is None:
                connection.prepare_threshold = _PREPARE_ONLY_WHEN_ASKED
            try:
                return super().execute(query, params, prepare=True, binary=binary)
            except psycopg.errors.InvalidSqlStatementName:
                # Deallocated behind psycopg's back (DEALLOCATE ALL or DISCARD ALL through another
                # cursor): this transaction fails with nothing written. psycopg forgets its
                # statements at the rollback; forgetting them now also serves a caller that
                # catches the error in a savepoint and records again in the same transaction.
                connection._prepared.clear()
                raise
            finally:
                connection.prepare_threshold = threshold

        # psycopg notes the query it sends only when it sends it unprepared; Django's query log
        # (last_executed_query) reads it, and would log None for every recording.
        def _send_prepare(self, name: bytes, query: Any) -> None:
            self._query = query
            super()._send_prepare(name, query)

        def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
            self._query = pgq
            super()._send_query_prepared(name, pgq, binary=binary)

    return PreparingCursor


def _insert(rows: list[list[Any]], connection: Any, *, using: str) -> None:
    notify = wakeup_mode(using) == "notify"
    postgresql = connection.vendor == "postgresql"
    width = len(_COLUMNS_POSTGRESQL) if postgresql else len(_COLUMNS)  # PostgreSQL: no available_at
    with _recording_cursor(connection) as cursor:
        for start in range(0, len(rows), 8):
            chunk = rows[start : start + 8]
            params = [value for row in chunk for value in row[:width]]
            if notify and start == 0:  # one notification per statement batch is enough
                cursor.execute(_INSERT_NOTIFY_SQL[len(chunk)], [*params, str(chunk[0][0])])
            else:
                cursor.execute(_INSERT_SQL[postgresql, len(chunk)], params)


def outbox_record(*, event: DomainEvent, using: str = "default") -> None:
    """Write the event's outbox row in the caller's transaction and wake the relay at commit:
    a NOTIFY in the same statement on PostgreSQL, or the on-commit Celery kick (outbox/wakeup.py).

    Raises OutboxOutsideTransaction when called outside `transaction.atomic()`. The row is
    inserted with one hand-written statement rather than `Model.save()`: recording sits on the path of
    every write of the application, and the ORM's insert compilation was most of its cost. Inside
    `outbox_atomic()` the row waits for the block's single INSERT.
    """
    event_schema_check(event)  # development and tests only (OUTBOX_EVENT_SCHEMA_CHECK)
    connection = connections[using]
    if not connection.in_atomic_block:
        raise OutboxOutsideTransaction(
            f"{event.event_type} must be recorded inside the transaction that changes the state"
        )
    field_of = _field_of
    # Only the values whose database form differs per backend go through the field.
    occurred_at = field_of("occurred_at").get_db_prep_save(event.occurred_at, connection)
    aggregate_id = event.aggregate_id
    topic = settings.KAFKA_TOPICS[event.stream]
    if telemetry_enabled():
        # The recording is a "create" span of the request's trace; the row stores that span's
        # context, which the record carries to the consumer (commerce/observability/telemetry.py).
        with outbox_record_span(topic=topic, event_id=event.event_id, event_type=event.event_type, key=aggregate_id):
            traceparent = traceparent_get()
    else:
        traceparent = traceparent_get()
    row = [
        field_of("event_id").get_db_prep_save(event.event_id, connection),
        topic,
        aggregate_id,
        event.event_type,
        event.event_version,
        event.aggregate_type,
        aggregate_id,
        event.aggregate_version,
        field_of("payload").get_db_prep_save(event.payload(), connection),
        field_of("headers").get_db_prep_save({"traceparent": traceparent}, connection),
        occurred_at,
        occurred_at,
        occurred_at,
    ]
    batch = _batches().get(using)
    if batch is not None:
        marker = None
        if len(connection.savepoint_ids) != batch.depth:
            marker = _SavepointMarker()
            transaction.on_commit(marker, using=using)
        batch.rows.append((row, marker))
    else:
        _insert([row], connection, using=using)
    relay_kick_on_commit(using=using)
