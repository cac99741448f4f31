"""Send: hand a claimed batch to the process's idempotent producer, and wait for its acks.

The send stops at the first row the producer refuses (each refusal may block `max_block_ms`), at
the batch's deadline, or when the process is stopping: the rows after that are not handed to
the producer at all (`NotSent`) and the write-back releases them untouched. So a later row of a
key never goes out after an earlier one failed, and a batch never outlives its lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from kafka.errors import KafkaError, KafkaTimeoutError

from commerce.observability.telemetry import relay_send_span_start, telemetry_enabled
from outbox.kafka import DeliveryFuture, producer_get, producer_reset
from outbox.relay.rows import ClaimedRow, NotSent, Outcome, ProducerUnavailable
from outbox.relay.stopping import relay_stop_requested

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
    futures: dict[int, DeliveryFuture]
    outcomes: dict[int, Outcome]
    deadline: float  # time.monotonic() by which the acks must be in: half the lease
    stopped: str = ""  # why the send stopped before the end of the batch, if it did
    claimed_at: float = 0.0  # time.monotonic() of its claim: the batch duration's start
    # seq -> the row's "send" span, while tracing is on; the write-back ends them.
    spans: dict[int, Any] = field(default_factory=dict)


def send(
    token: uuid.UUID,
    rows: list[ClaimedRow],
    *,
    deadline: float,
    abort: threading.Event | None = None,
    claimed_at: float = 0.0,
) -> SentBatch:
    """Hand the rows to the producer in seq order until one is refused, the deadline passes,
    the process is stopping or `abort` is set (an earlier batch failed while this one was being
    sent); does not wait for the acknowledgements. While tracing is on, each row handed over gets
    its "send" span (linked to the row's traceparent), ended by the write-back."""
    abort = abort or threading.Event()
    outcomes: dict[int, Outcome] = {}
    futures: dict[int, DeliveryFuture] = {}
    batch = SentBatch(token, rows, futures, outcomes, deadline, claimed_at=claimed_at)
    spans = batch.spans if telemetry_enabled() else None
    try:
        producer = producer_get()
    except Exception as exc:  # noqa: BLE001 - recorded on the first row, the rest is released
        # The producer itself failed (e.g. no broker to bootstrap from).
        producer_reset()
        return _stop_at(batch, 0, ProducerUnavailable(f"{type(exc).__name__}: {exc}"))
    send_one = producer.send
    crash_on = settings.OUTBOX_FAULT_CRASH_ON_EVENT_ID
    for index, row in enumerate(rows):
        if abort.is_set():
            return _stop_at(batch, index, None, why="an earlier batch failed")
        if relay_stop_requested():
            return _stop_at(batch, index, None, why="stopping")
        if time.monotonic() >= deadline:
            return _stop_at(batch, index, None, why="deadline")
        if crash_on and row.event_id == crash_on:
            # Fault tests: a send that kills the process (a segfault in a client library, an
            # out-of-memory serialization, a supervisor's SIGKILL on a stuck send).
            logger.warning("crashing on event", extra={"event_id": row.event_id})
            os.kill(os.getpid(), signal.SIGKILL)
        if spans is not None:
            spans[row.seq] = relay_send_span_start(
                topic=row.topic,
                event_id=row.event_id,
                event_type=row.type,
                key=row.key,
                traceparent=(row.headers or {}).get("traceparent"),
            )
        try:
            futures[row.seq] = send_one(
                row.topic, key=row.key.encode(), value=row.payload_text.encode(), headers=record_headers(row)
            )
        except Exception as exc:  # noqa: BLE001 - the row's failure is recorded on the row
            if abort.is_set():  # the producer was closed under this send: not this row's fault
                return _stop_at(batch, index, None, why="an earlier batch failed")
            return _stop_at(batch, index, exc)
    return batch


def _stop_at(batch: SentBatch, index: int, error: BaseException | None, *, why: str = "") -> SentBatch:
    """Record `error` on row `index` (if any); the rows after it are not sent."""
    if error is not None:
        batch.outcomes[batch.rows[index].seq] = error
        index += 1
        why = why or f"{type(error).__name__}: {error}"
    for row in batch.rows[index:]:
        batch.outcomes[row.seq] = NotSent(why)
    batch.stopped = why
    if batch.rows[index:]:
        logger.warning(
            "send stopped before the end of the batch", extra={"reason": why, "not_sent": len(batch.rows) - index}
        )
    return batch


def acknowledged(
    batch: SentBatch, *, flush: bool, after_abort: bool = False, abort: threading.Event | None = None
) -> tuple[dict[int, Outcome], bool]:
    """Wait until the broker answered for every row of the batch (or its deadline passed).

    Returns (seq -> RecordMetadata or the exception that row ended with, whether the producer
    was aborted). At the first failure the producer is dropped at once (`close(0)`): what it still
    held of this batch and of the next one is never sent, so no later row of a key can follow a
    failed one onto the topic; those rows read `NotSent` and are released. `after_abort` says the
    producer that had this batch was dropped that way. `flush` sends what the producer still
    lingers on at once: for the last batch of a drain, where nothing follows.
    """
    outcomes = dict(batch.outcomes)
    aborted = False
    # After an abort the producer that had this batch is gone: a flush would make a new one
    # (bootstrapping for up to max_block_ms against a broker that just failed) to flush nothing.
    if flush and batch.futures and not after_abort and not (abort is not None and abort.is_set()):
        try:
            producer_get().flush(timeout=max(0.0, batch.deadline - time.monotonic()))
        except KafkaError as exc:
            logger.warning("producer flush did not complete", extra={"error": repr(exc)})
    for seq, future in batch.futures.items():
        if not future.is_done and not aborted:
            # Whatever the wait ends with, the outcome is read from the future below.
            with contextlib.suppress(Exception):
                timeout = max(0.0, batch.deadline - time.monotonic())
                future.get(timeout=timeout)
        if future.is_done and future.exception is None:
            outcomes[seq] = future.value
        elif aborted or after_abort:
            outcomes[seq] = NotSent("the producer was dropped after an earlier failure")
        else:
            error = future.exception if future.is_done else None
            # No answer in time: a timeout, retriable (the cluster is slow or short of
            # replicas), never the row's fault, so it never makes the row dead.
            outcomes[seq] = error or KafkaTimeoutError("not acknowledged before the deadline")
            aborted = True
            if abort is not None:
                abort.set()  # before the producer goes: the next batch's send stops first
            logger.warning("send failed: dropping the producer", extra={"error": repr(outcomes[seq])})
            producer_reset()
    return outcomes, aborted
