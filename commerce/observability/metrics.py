"""Every Prometheus metric of the pipeline, and the functions the relay and the consumer call.

Call sites pass plain values (topic, counts, seconds, times), never relay or consumer objects,
so that this module does not depend on their internals. The database figures (backlog, dead
rows, open dead letters) are not here: they are read at scrape time by `exporters`.

Each metric is defined once per process at import. In a Celery prefork worker the client's
multiprocess mode aggregates the children (see `exporters.worker_registry`): the gauges say how.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from prometheus_client import Counter, Gauge, Histogram

# Seconds from the commit of the event to the broker's ack, and to the projection: the relay
# is kicked on commit (tens of ms), a backlog or a retry pushes it to seconds or minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)

# --- relay ------------------------------------------------------------------------------------
OUTBOX_PUBLISHED = Counter(
    "outbox_events_published", "Outbox events acknowledged by Kafka and marked published.", ["topic"]
)
OUTBOX_SEND_FAILED = Counter(
    "outbox_send_failures", "Failed send attempts of outbox events (retried or dead).", ["topic", "error"]
)
OUTBOX_RETRIED = Counter(
    "outbox_send_retries", "Failed sends scheduled for another attempt after a backoff.", ["topic", "error"]
)
OUTBOX_DEAD = Counter(
    "outbox_events_dead", "Outbox events that became dead (permanent error or attempts spent).", ["topic", "error"]
)
RELAY_BATCH_SIZE = Histogram("outbox_relay_batch_size", "Rows per claimed relay batch.", buckets=_BATCH_SIZE_BUCKETS)
RELAY_BATCH_SECONDS = Histogram(
    "outbox_relay_batch_duration_seconds",
    "Seconds from claiming a relay batch to writing back its outcome.",
    buckets=_DURATION_BUCKETS,
)
COMMIT_TO_ACK_SECONDS = Histogram(
    "outbox_commit_to_ack_seconds",
    "Seconds from the event's commit (occurred_at) to the broker's acknowledgement.",
    ["topic"],
    buckets=_LATENCY_BUCKETS,
)
RELAY_LAST_DRAIN = Gauge(
    "outbox_relay_last_drain_timestamp_seconds",
    "Unix time at which a relay drain last finished (idle drains included): the relay's heartbeat.",
    multiprocess_mode="max",
)

# --- back office consumer ---------------------------------------------------------------------
CONSUMER_APPLIED = Counter("backoffice_records_applied", "Records applied to the projections.", ["topic"])
CONSUMER_DUPLICATES = Counter(
    "backoffice_records_duplicate", "Records skipped because the inbox had already applied them.", ["topic"]
)
CONSUMER_DEAD_LETTERED = Counter(
    "backoffice_records_dead_lettered", "Records dead-lettered by the back office.", ["topic", "error"]
)
CONSUMER_LAG = Gauge(
    "backoffice_consumer_lag_records",
    "Records between the consumer's position and the end of the partition.",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
CONSUMER_BATCH_SECONDS = Histogram(
    "backoffice_batch_apply_duration_seconds",
    "Seconds to apply one polled batch (one transaction) to the projections.",
    buckets=_DURATION_BUCKETS,
)
COMMIT_TO_PROJECTION_SECONDS = Histogram(
    "backoffice_commit_to_projection_seconds",
    "Seconds from the event's commit (occurred_at) to its projection's commit.",
    ["topic"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAST_POLL = Gauge(
    "backoffice_consumer_last_poll_timestamp_seconds",
    "Unix time of the consumer's last poll: its heartbeat.",
    multiprocess_mode="max",
)


def error_kind(error: BaseException | str | None) -> str:
    """A bounded label for an error: its exception class name.

    A string is the relay's `last_error` form, "ClassName: message"; the message itself would
    make one series per distinct text.
    """
    if error is None:
        return "unknown"
    if isinstance(error, BaseException):
        return type(error).__name__
    head = error.split(":", 1)[0].strip()
    return head if head.isidentifier() else "unknown"


def _seconds_since(moment: datetime | str, now: datetime | None) -> float:
    if isinstance(moment, str):
        text = moment
        try:
            moment = datetime.fromisoformat(text)  # the C parser: this runs once per event
        except ValueError:
            parsed = parse_datetime(text)
            if parsed is None:
                raise
            moment = parsed
    # A clock a little behind the producer's would give a negative latency: count it as zero.
    return max(0.0, ((now or timezone.now()) - moment).total_seconds())


# --- relay call sites -------------------------------------------------------------------------


def relay_batch_observed(*, size: int, seconds: float) -> None:
    """One claimed batch written back: its row count and its claim-to-write-back seconds."""
    RELAY_BATCH_SIZE.observe(size)
    RELAY_BATCH_SECONDS.observe(seconds)


def relay_published_observed(*, topic: str, occurred_at: datetime | str, acked_at: datetime | None = None) -> None:
    """One row acknowledged and marked published; `occurred_at` is the row's commit time."""
    OUTBOX_PUBLISHED.labels(topic).inc()
    COMMIT_TO_ACK_SECONDS.labels(topic).observe(_seconds_since(occurred_at, acked_at))


def relay_published_batch_observed(
    *, rows: Iterable[tuple[str, datetime | str]], acked_at: datetime | None = None
) -> None:
    """The rows of one write-back marked published, as (topic, occurred_at) pairs.

    The same samples as `relay_published_observed` per row, at a third of its cost: the relay
    marks thousands of rows a second, and this runs on its path.
    """
    acked_at = acked_at or timezone.now()
    published: dict[str, int] = defaultdict(int)
    latency_of: dict[str, Any] = {}
    for topic, occurred_at in rows:
        published[topic] += 1
        child = latency_of.get(topic)
        if child is None:
            child = latency_of[topic] = COMMIT_TO_ACK_SECONDS.labels(topic)
        child.observe(_seconds_since(occurred_at, acked_at))
    for topic, count in published.items():
        OUTBOX_PUBLISHED.labels(topic).inc(count)


def relay_failed_observed(*, topic: str, error: BaseException | str | None, dead: bool) -> None:
    """One failed send: counted as failed, then as retried or (when `dead`) as dead."""
    kind = error_kind(error)
    OUTBOX_SEND_FAILED.labels(topic, kind).inc()
    (OUTBOX_DEAD if dead else OUTBOX_RETRIED).labels(topic, kind).inc()


def relay_drain_observed(*, at: float | None = None) -> None:
    """A drain finished (even with nothing to send): the heartbeat the relay-down alert reads."""
    RELAY_LAST_DRAIN.set(time.time() if at is None else at)


# --- consumer call sites ----------------------------------------------------------------------


def consumer_batch_observed(*, seconds: float) -> None:
    """One polled batch applied (its transaction committed) in `seconds`."""
    CONSUMER_BATCH_SECONDS.observe(seconds)


def consumer_records_observed(
    *,
    topic: str,
    applied: int = 0,
    duplicates: int = 0,
    dead_lettered: int = 0,
    error: BaseException | str | None = None,
) -> None:
    """Counts of one topic's records in a batch; `error` labels the dead-lettered ones."""
    if applied:
        CONSUMER_APPLIED.labels(topic).inc(applied)
    if duplicates:
        CONSUMER_DUPLICATES.labels(topic).inc(duplicates)
    if dead_lettered:
        CONSUMER_DEAD_LETTERED.labels(topic, error_kind(error)).inc(dead_lettered)


def consumer_applied_latency_observed(
    *, topic: str, occurred_at: datetime | str, applied_at: datetime | None = None
) -> None:
    """One applied event: seconds from its commit to the commit of its projection."""
    COMMIT_TO_PROJECTION_SECONDS.labels(topic).observe(_seconds_since(occurred_at, applied_at))


def consumer_applied_batch_latency_observed(
    *, rows: Iterable[tuple[str, datetime | str]], applied_at: datetime | None = None
) -> None:
    """`consumer_applied_latency_observed` for the (topic, occurred_at) of a batch's events,
    at a fraction of the per-call cost; `applied_at` is the batch's commit."""
    applied_at = applied_at or timezone.now()
    latency_of: dict[str, Any] = {}
    for topic, occurred_at in rows:
        child = latency_of.get(topic)
        if child is None:
            child = latency_of[topic] = COMMIT_TO_PROJECTION_SECONDS.labels(topic)
        child.observe(_seconds_since(occurred_at, applied_at))


def consumer_lag_observed(*, topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic, str(partition)).set(lag)


def consumer_partitions_revoked(*, partitions: list[tuple[str, int]]) -> None:
    """Forget the lag of partitions this consumer no longer owns (their new owner reports it)."""
    for topic, partition in partitions:
        with contextlib.suppress(KeyError):  # never reported by this process
            CONSUMER_LAG.remove(topic, str(partition))


def consumer_poll_observed(*, at: float | None = None) -> None:
    """The consumer polled (records or not): the heartbeat the consumer-down alert reads."""
    CONSUMER_LAST_POLL.set(time.time() if at is None else at)
