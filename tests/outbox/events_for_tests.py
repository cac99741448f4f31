"""An event type for relay tests (a key and a per-key sequence number, nothing else), rows made
straight in the outbox, and another relay holding a row's lock."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

from django.db import connections, transaction
from django.utils import timezone

from outbox.envelope import DomainEvent
from outbox.models import OutboxEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceRecorded(DomainEvent):
    stream = "catalog-events"
    aggregate_type = "product"
    aggregate_field = "product_id"

    product_id: str
    sequence: int


def outbox_rows_bulk(*, topic: str, keys: int, per_key: int, **extra: object) -> list[OutboxEvent]:
    """Insert keys x per_key pending rows straight into the outbox, interleaved across keys."""
    now = timezone.now()
    rows = []
    for sequence in range(per_key):
        for key in range(1, keys + 1):
            event = SequenceRecorded(product_id=str(key), sequence=sequence)
            rows.append(
                OutboxEvent(
                    event_id=event.event_id,
                    topic=topic,
                    key=str(key),
                    type=event.event_type,
                    aggregatetype="product",
                    aggregateid=str(key),
                    payload=event.payload(),
                    headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
                    occurred_at=now,
                    available_at=now,
                    **extra,
                )
            )
    return OutboxEvent.objects.bulk_create(rows, batch_size=2000)


@contextlib.contextmanager
def row_locked_by_another_relay(seq: int) -> Iterator[None]:
    """Another relay in the middle of its claim: a thread holds the row lock on outbox row `seq`
    (FOR UPDATE, in a transaction of its own connection) until the block ends."""
    locked, release = threading.Event(), threading.Event()

    def other_relay() -> None:
        try:
            with transaction.atomic():
                OutboxEvent.objects.select_for_update().filter(seq=seq).first()
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_relay)
    thread.start()
    try:
        assert locked.wait(10), "the other relay never took its lock"
        yield
    finally:
        release.set()
        thread.join()
