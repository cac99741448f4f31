"""Recording events: the only outbox API the domain apps use."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from commerce.tracing import traceparent_get
from outbox.envelope import DomainEvent
from outbox.models import OutboxEvent


class OutboxOutsideTransaction(RuntimeError):
    """Recording in autocommit would commit the event apart from the change it describes."""


def outbox_record(*, event: DomainEvent, using: str = "default") -> OutboxEvent:
    """Write the event's outbox row in the caller's transaction and nudge the relay after commit.

    Raises OutboxOutsideTransaction when called outside `transaction.atomic()`.
    """
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block:
        raise OutboxOutsideTransaction(
            f"{event.event_type} must be recorded inside the transaction that changes the state"
        )
    row = OutboxEvent.objects.using(using).create(
        event_id=event.event_id,
        topic=settings.KAFKA_TOPICS[event.stream],
        key=event.aggregate_id,
        type=event.event_type,
        event_version=event.event_version,
        aggregatetype=event.aggregate_type,
        aggregateid=event.aggregate_id,
        payload=event.payload(),
        headers={"traceparent": traceparent_get()},
        occurred_at=event.occurred_at,
        available_at=event.occurred_at,
    )
    from outbox.kick import relay_kick_on_commit  # the relay module imports Kafka lazily

    relay_kick_on_commit(using=using)
    return row
