"""Send: hand a claimed batch to the process's idempotent producer, and wait for its acks.

The send stops at the first row the producer refuses (each refusal may block `max_block_ms`), at
the batch's deadline, or when the process is stopping: the rows after that are not handed to
the producer at all (`NotSent`) and the write-back releases them untouched. So a later row of a
key never goes out after an earlier one failed, and a batch never outlives its lease.

One refusal does not stop the send: a topic the cluster says it does not have. Its rows fail
at once (`TopicMissing`, a backoff) until the cluster has it again, and the rows of their keys
are not sent; the other topics' rows go on (`MissingTopics`).
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
from typing import TYPE_CHECKING, Any

from django.conf import settings
from kafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError

from commerce.observability.telemetry import relay_send_span_start, telemetry_enabled
from outbox.kafka import (
    DeliveryFuture,
    producer_get,
    producer_reset,
    producer_topic_absent,
    producer_topic_present,
)
from outbox.relay.rows import (
    ClaimedRow,
    NotSent,
    Outcome,
    ProducerUnavailable,
    TopicMissing,
    topic_missing_backoff_seconds,
)
from outbox.relay.stopping import relay_stop_requested

if TYPE_CHECKING:
    from outbox.kafka import RelayProducer

logger = logging.getLogger("outbox.relay")


# How long a missing topic is held back before the producer is asked whether it is back.
MISSING_TOPIC_RECHECK_S = 1.0


@dataclass
class _Held:
    since: float  # time.time() the cluster first answered without the topic
    held_at: float  # the same moment on time.monotonic()
    checked: float  # time.monotonic() of the last look for it


class MissingTopics:
    """The topics this process's relays found missing from the cluster, until it has them again.

    A topic deleted by mistake (or not made yet: `ensure_topics` makes them) must not hold back
    the others. Without this, every batch stopped at the missing topic's oldest row, after
    kafka-python's send blocked `max_block_ms` (5 s) waiting for its metadata: the other topics'
    rows went out a few a minute. Only an answer of the cluster holds a topic back (kafka-python:
    its metadata refreshed during the wait, still without the topic; confluent-kafka: a delivery
    refused with UnknownTopicOrPartition), never a timeout alone: a cluster that does not answer
    still stops the batch at its first row. A held topic's rows fail at once, each into its
    backoff (`TopicMissing`: no attempt counted, a backoff as long as the topic has been
    missing); once a second has passed, the next of its rows asks the producer's view of the
    cluster (no wait) and goes out if the cluster has listed the topic since the hold began.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}

    def hold(self, topic: str, error: BaseException, *, event_id: str) -> None:
        with self._lock:
            if topic in self._held:
                return
            now = time.monotonic()
            self._held[topic] = _Held(since=time.time(), held_at=now, checked=now)
        logger.error(
            "topic missing from the cluster: its rows wait, the other topics' go on (make it: ensure_topics)",
            extra={"topic": topic, "event_id": event_id, "error": f"{type(error).__name__}: {error}"},
        )

    def held(self, topic: str, producer: RelayProducer) -> _Held | None:
        """The hold on `topic`, or None if it is not held (any more: asked at most once a second)."""
        if not self._held:  # every row asks: no lock while nothing is held
            return None
        with self._lock:
            held = self._held.get(topic)
            if held is None or time.monotonic() - held.checked < MISSING_TOPIC_RECHECK_S:
                return held
            held.checked = time.monotonic()
        # Only what the cluster said since the hold began: a producer that knew the topic
        # before it was deleted still lists it until its next metadata refresh (5 minutes).
        if not producer_topic_present(producer, topic, since=held.held_at):
            return held
        with self._lock:
            self._held.pop(topic, None)
        logger.warning("topic back in the cluster: its rows are sent again", extra={"topic": topic})
        return None

    def topics(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def forget(self) -> None:
        with self._lock:
            self._held.clear()


missing_topics = MissingTopics()


def _topic_missing(topic: str, held: _Held) -> TopicMissing:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(held.since))
    return TopicMissing(
        f"the cluster has no topic {topic!r} (since {since}): the row waits until it is made again",
        backoff_s=topic_missing_backoff_seconds(time.monotonic() - held.held_at),
    )


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
    held: int = 0  # rows failed at once: their topic is missing (`MissingTopics`)
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
    held_keys: set[str] | None = None,
) -> SentBatch:
    """Hand the rows to the producer in seq order until one is refused, the deadline passes,
    the process is stopping or `abort` is set (an earlier batch failed while this one was being
    sent); does not wait for the acknowledgements. While tracing is on, each row handed over gets
    its "send" span (linked to the row's traceparent), ended by the write-back.

    A row of a missing topic fails at once (`MissingTopics`) and the send goes on; its key joins
    `held_keys` (the drain's, across its batches): the later rows of those keys are not sent.
    A row its last relay died holding is never held back this way: it is sent alone, as found."""
    abort = abort or threading.Event()
    held_keys = set() if held_keys is None else held_keys
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
        if row.key in held_keys:
            outcomes[row.seq] = NotSent("an earlier row of its key is held back: its topic is missing")
            continue
        held = None if row.abandoned else missing_topics.held(row.topic, producer)
        if held is not None:
            outcomes[row.seq] = _topic_missing(row.topic, held)
            held_keys.add(row.key)
            batch.held += 1
            continue
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
        asked_at = time.monotonic()
        try:
            futures[row.seq] = send_one(
                row.topic, key=row.key.encode(), value=row.payload_text.encode(), headers=record_headers(row)
            )
        except Exception as exc:  # noqa: BLE001 - the row's failure is recorded on the row
            if abort.is_set():  # the producer was closed under this send: not this row's fault
                return _stop_at(batch, index, None, why="an earlier batch failed")
            if (
                isinstance(exc, KafkaTimeoutError)
                and not row.abandoned
                and producer_topic_absent(producer, row.topic, since=asked_at)
            ):
                missing_topics.hold(row.topic, exc, event_id=row.event_id)
                held = missing_topics.held(row.topic, producer)
                outcomes[row.seq] = exc if held is None else _topic_missing(row.topic, held)
                held_keys.add(row.key)
                batch.held += 1
                continue
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
            if isinstance(error, UnknownTopicOrPartitionError):
                # librdkafka's answer for a missing topic: the next sends hold it back.
                row = next(row for row in batch.rows if row.seq == seq)
                missing_topics.hold(row.topic, error, event_id=row.event_id)
            aborted = True
            if abort is not None:
                abort.set()  # before the producer goes: the next batch's send stops first
            logger.warning("send failed: dropping the producer", extra={"error": repr(outcomes[seq])})
            producer_reset()
    return outcomes, aborted
