"""Recording events: the only outbox API the domain apps use."""

from __future__ import annotations

from django.conf import settings
from django.db import connections, transaction

from commerce.tracing import traceparent_get
from outbox.envelope import DomainEvent
from outbox.kick import relay_kick_on_commit
from outbox.models import OutboxEvent


class OutboxOutsideTransaction(RuntimeError):
    """Recording in autocommit would commit the event apart from the change it describes."""


_COLUMNS = ("event_id", "topic", "key", "type", "event_version", "aggregatetype", "aggregateid",
            "payload", "headers", "occurred_at", "created_at", "status", "available_at", "attempts",
            "last_error")


def _insert_sql() -> str:
    meta = OutboxEvent._meta
    columns = ", ".join(meta.get_field(name).column for name in _COLUMNS)
    placeholders = ", ".join(["%s"] * len(_COLUMNS))
    return f"INSERT INTO {meta.db_table} ({columns}) VALUES ({placeholders})"


_INSERT_SQL = _insert_sql()


def outbox_record(*, event: DomainEvent, using: str = "default") -> None:
    """Write the event's outbox row in the caller's transaction and nudge the relay after commit.

    Raises OutboxOutsideTransaction when called outside `transaction.atomic()`. The row is
    inserted with one prepared statement rather than `Model.save()`: recording sits on the path of
    every write of the application, and the ORM's insert compilation was most of its cost.
    """
    connection = connections[using]
    if not connection.in_atomic_block:
        raise OutboxOutsideTransaction(
            f"{event.event_type} must be recorded inside the transaction that changes the state"
        )
    values = {
        "event_id": event.event_id, "topic": settings.KAFKA_TOPICS[event.stream],
        "key": event.aggregate_id, "type": event.event_type, "event_version": event.event_version,
        "aggregatetype": event.aggregate_type, "aggregateid": event.aggregate_id,
        "payload": event.payload(), "headers": {"traceparent": traceparent_get()},
        "occurred_at": event.occurred_at, "created_at": event.occurred_at,
        "status": OutboxEvent.Status.PENDING, "available_at": event.occurred_at, "attempts": 0,
        "last_error": "",
    }
    field = OutboxEvent._meta.get_field
    params = [field(name).get_db_prep_save(values[name], connection) for name in _COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, params)
    relay_kick_on_commit(using=using)
