"""Send: hand a claimed batch to the process's idempotent producer, and wait for its acks."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from kafka.errors import KafkaError

from outbox.kafka import producer_get, producer_reset
from outbox.relay.rows import ClaimedRow, ProducerUnavailable

logger = logging.getLogger("outbox.relay")


def record_headers(row: ClaimedRow) -> list[tuple[str, bytes]]:
    headers = [
        ("event_id", row.event_id.encode()),
        ("event_type", row.type.encode()),
        ("event_version", str(row.event_version).encode()),
        ("aggregate_type", row.aggregatetype.encode()),
        ("aggregate_id", row.aggregateid.encode()),
        ("occurred_at", row.occurred_at.encode()),
    ]
    if row.aggregate_version is not None:
        headers.append(("aggregate_version", str(row.aggregate_version).encode()))
    for name, value in (row.headers or {}).items():
        headers.append((name, str(value).encode()))
    return headers


@dataclass
class SentBatch:
    """A claimed batch handed to the producer, not yet written back."""

    token: uuid.UUID
    rows: list[ClaimedRow]
    futures: dict[int, object]
    outcomes: dict[int, object]
    deadline: float


def send(token: uuid.UUID, rows: list[ClaimedRow]) -> SentBatch:
    """Hand every row to the producer, in seq order; does not wait for the acknowledgements."""
    deadline = time.monotonic() + settings.OUTBOX_CLAIM_TTL / 2
    outcomes: dict[int, object] = {}
    futures: dict[int, object] = {}
    try:
        producer = producer_get()
    except Exception as exc:  # noqa: BLE001 - recorded on every row of the batch
        # The producer itself failed (e.g. no broker to bootstrap from): every row failed.
        producer_reset()
        unavailable = ProducerUnavailable(f"{type(exc).__name__}: {exc}")
        return SentBatch(token, rows, {}, {row.seq: unavailable for row in rows}, deadline)
    send = producer.send
    for row in rows:
        try:
            futures[row.seq] = send(row.topic, key=row.key.encode(), value=row.payload_text.encode(),
                                    headers=record_headers(row))
        except Exception as exc:  # noqa: BLE001 - each row's failure is recorded on the row
            outcomes[row.seq] = exc
    return SentBatch(token, rows, futures, outcomes, deadline)


def acknowledged(batch: SentBatch, *, flush: bool) -> dict[int, object]:
    """Wait until the broker answered for every row of the batch (or its deadline passed).

    Returns seq -> RecordMetadata or the exception that row ended with. `flush` sends what the
    producer still lingers on at once: for the last batch of a drain, where nothing follows.
    """
    outcomes = dict(batch.outcomes)
    if flush and batch.futures:
        try:
            producer_get().flush(timeout=max(0.0, batch.deadline - time.monotonic()))
        except KafkaError as exc:
            logger.warning("producer flush did not complete", extra={"error": repr(exc)})
    for seq, future in batch.futures.items():
        if not future.is_done:
            try:
                future.get(timeout=max(0.0, batch.deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - the outcome is read from the future below
                pass
        if future.is_done:
            outcomes[seq] = future.value if future.exception is None else future.exception
        else:
            outcomes[seq] = KafkaError("not acknowledged before the deadline")
    return outcomes

