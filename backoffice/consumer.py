"""The back-office consumer loop: poll a batch, apply it once in one transaction, then commit
the Kafka offsets.

- Offsets are committed only after the batch's transaction committed: a crash in between
  redelivers the batch, and the inbox skips what was already applied.
- A record that breaks the contract is dead-lettered (a DeadLetter row, and the record on
  `<topic>.dlq` with the error in its headers) and its offset moves on with the batch: one bad
  record never blocks a partition.
- A transient failure (the database or the broker away) never skips a record: the batch is
  not committed, the consumer seeks back to the batch's first offsets, backs off and retries,
  and stays alive until the dependency returns.
- A value the database refuses on every attempt is isolated (backoffice/isolation.py): the
  record is dead-lettered with the database's message and the rest of the batch applied.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.future import Future
from kafka.structs import OffsetAndMetadata

from backoffice.contract import IncomingEvent
from backoffice.dlq import DeadLetterForwarder
from backoffice.isolation import (
    ConsumedRecord,
    batch_apply_isolating,
    error_is_transient,
    forward_once,
    records_parse,
)
from backoffice.projections import BatchOutcome
from commerce.gc_freeze import startup_objects_frozen
from commerce.observability import metrics
from commerce.observability.telemetry import consumer_batch_spans
from commerce.tracing import trace_context
from outbox.kafka import topic_auto_create_off

logger = logging.getLogger(__name__)


@dataclass
class ConsumerStats:
    polled: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0


class _CommitBeforeRevoke(ConsumerRebalanceListener):
    def __init__(self, consumer_loop: EventConsumer) -> None:
        self.loop = consumer_loop

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # The batches applied whose offsets are not committed yet (one commit at a time is in
        # flight); anything not applied is redelivered to the next owner.
        self.loop.offsets_commit_revoked(set(revoked))
        metrics.consumer_partitions_revoked(partitions=[(tp.topic, tp.partition) for tp in revoked])
        for tp in revoked:
            self.loop._positions.pop(tp, None)

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        # Out of the group (evicted): a commit would be refused; the new owner re-reads from the
        # last commit and the inbox absorbs what this member applied since.
        self.loop.offsets_forget(set(lost))
        metrics.consumer_partitions_revoked(partitions=[(tp.topic, tp.partition) for tp in lost])
        for tp in lost:
            self.loop._positions.pop(tp, None)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        logger.info(
            "partitions assigned", extra={"partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)}
        )
        if self.loop.seek_to_beginning_on_assign and assigned:
            self.loop.consumer.seek_to_beginning(*assigned)


# `run(until_idle_s=...)` counts idle time only once every assigned partition answered a fetch,
# or after this long without (a partition whose leader is gone would otherwise hold it forever).
FIRST_FETCH_WAIT_MAX_S = 30.0

# Seconds between two readings of the lag gauges: read from the fetcher's cached high
# watermarks, no broker round trip, but not worth doing for every poll.
LAG_EVERY_S = 1.0

# Called after each batch's transaction committed with its applied events, the time.time() of
# the commit and the batch's records by (topic, partition, offset) (bench/e2e.py measures
# commit -> projection with it, and the consumer's own leg from the records' Kafka timestamps).
AppliedHook = Callable[[list[IncomingEvent], float, dict[tuple[str, int, int], ConsumedRecord]], None]


class EventConsumer:
    def __init__(
        self,
        *,
        topics: list[str],
        group_id: str,
        batch_size: int | None = None,
        from_beginning: bool = True,
        seek_to_beginning_on_assign: bool = False,
        progress_every_s: float = 10.0,
        on_applied: AppliedHook | None = None,
    ) -> None:
        startup_objects_frozen()
        self.topics = topics
        self.on_applied = on_applied
        self._lag_read_at = 0.0
        self.group_id = group_id
        self.batch_size = batch_size or settings.BACKOFFICE_BATCH_SIZE
        self.seek_to_beginning_on_assign = seek_to_beginning_on_assign
        self.progress_every_s = progress_every_s
        self.stats = ConsumerStats()
        self.stopping = False
        self._applied_offsets: dict[TopicPartition, int] = {}  # applied, commit not confirmed yet
        self._commits_in_flight: list[tuple[Future, dict[TopicPartition, OffsetAndMetadata]]] = []
        self._positions: dict[TopicPartition, int] = {}  # next offset to apply, for the lag
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            group_id=group_id,
            # A subscribed topic that is missing (deleted to be recreated, or not made yet) stays
            # missing: `ensure_topics` makes topics, with their partitions and replication.
            allow_auto_create_topics=False,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            max_poll_records=self.batch_size,
            # How long the broker holds a fetch while fewer than fetch_min_bytes are there: a
            # record arriving in an idle partition is answered at once either way (min 1 byte),
            # this bounds the wait of an empty fetch (docs/BACKOFFICE.md, tuning).
            fetch_max_wait_ms=settings.BACKOFFICE_FETCH_MAX_WAIT_MS,
            # A crashed member's partitions move to the others after this long without heartbeats.
            session_timeout_ms=settings.BACKOFFICE_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=max(1000, settings.BACKOFFICE_SESSION_TIMEOUT_MS // 4),
            client_id=f"backoffice-{group_id}",
            # A topic deleted and recreated is seen at the next metadata refresh (then the group
            # rebalances and the new topic is read from its start): seconds, not the 5-minute default.
            metadata_max_age_ms=5000,
            **settings.KAFKA_SECURITY,
        )
        topic_auto_create_off(self.consumer)
        self.consumer.subscribe(topics, listener=_CommitBeforeRevoke(self))
        self._dlq = DeadLetterForwarder(group_id=group_id)

    # --- lifecycle ---------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def close(self) -> None:
        self.offsets_commit()
        self.consumer.close(autocommit=False)
        self._dlq.close()

    # --- the loop ----------------------------------------------------------------------------

    def run(
        self,
        *,
        until_idle_s: float | None = None,
        max_events: int | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> ConsumerStats:
        last_record_at = time.monotonic()
        last_progress_at = time.monotonic()
        progress_polled = 0
        # Since when the current assignment has had a partition whose fetch was never answered.
        unanswered_since: float | None = None
        unanswered_of: set[TopicPartition] = set()
        while not self.stopping:
            try:
                polled = self.consumer.poll(timeout_ms=settings.BACKOFFICE_POLL_TIMEOUT_MS, max_records=self.batch_size)
            except KafkaError as exc:
                self._back_off("kafka poll failed", exc)
                continue
            metrics.consumer_poll_observed()
            records = any(polled.values())  # each partition's list holds a record at least
            assigned = self.consumer.assignment()
            if records or not assigned:
                # Idle means "assigned and nothing to read", not "waiting to join the group".
                last_record_at = time.monotonic()
                self._process(polled)
            elif self._applied_offsets:
                # Idle: the last batches' offsets, held while an earlier commit was unanswered.
                self.offsets_commit(wait=False)
            now = time.monotonic()
            if assigned and not records:
                if self._every_partition_fetched(assigned):
                    unanswered_since = None
                else:
                    # Nor "assigned, nothing read yet": between the assignment and each
                    # partition's first fetch answer (its committed offset looked up, reset,
                    # fetched) a busy broker can take seconds. Bounded, once per assignment: a
                    # partition without a leader never answers.
                    if unanswered_since is None or assigned != unanswered_of:
                        unanswered_since, unanswered_of = now, set(assigned)
                    if now - unanswered_since < FIRST_FETCH_WAIT_MAX_S:
                        last_record_at = now
            if now - self._lag_read_at >= LAG_EVERY_S:
                self._lag_read_at = now
                self._lag_observe()
            if now - last_progress_at >= self.progress_every_s:
                line = self._progress_line(self.stats.polled - progress_polled, now - last_progress_at)
                logger.info(line)
                if on_progress:
                    on_progress(line)
                last_progress_at, progress_polled = now, self.stats.polled
            if max_events is not None and self.stats.polled >= max_events:
                break
            if until_idle_s is not None and not records and now - last_record_at >= until_idle_s:
                break
        return self.stats

    def _every_partition_fetched(self, assigned: set[TopicPartition]) -> bool:
        """Whether a fetch of each assigned partition has been answered (its high watermark is
        known from the answer, even an empty one)."""
        return all(self.consumer.highwater(tp) is not None for tp in assigned)

    def _process(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        batch = records_parse(record for records in polled.values() for record in records)
        # A poison record's copy goes to `.dlq` once, not again at each retry of its batch.
        forward = forward_once(self._dlq)
        attempt = 0
        while True:
            try:
                started = time.perf_counter()
                # One consumer span per record, continuing the producer's context; they end
                # with the batch's transaction (as errors when it fails and is retried).
                with consumer_batch_spans(batch.events, group=self.group_id):
                    outcome = batch_apply_isolating(group=self.group_id, batch=batch, forward=forward)
                metrics.consumer_batch_observed(seconds=time.perf_counter() - started)
            except Exception as exc:  # the consumer outlives any error (BLE sees it logged below)
                # Only transient errors are expected here (the rest is isolated record by
                # record); anything else is a bug, logged with its traceback, and the batch is
                # retried rather than the process killed (`make run` would stop the whole stack).
                if not error_is_transient(exc):
                    logger.exception("batch failed outside the isolation of records, retrying")
                attempt += 1
                self._back_off("batch not applied, retrying", exc, attempt=attempt)
                if self.stopping:
                    self._seek_back(polled)
                    return
            else:
                # Outside the try: an error after the commit is not a reason to apply the batch again.
                self._after_commit(polled, outcome, batch.events, batch.records)
                return

    def _after_commit(
        self,
        polled: dict[TopicPartition, list[ConsumerRecord]],
        outcome: BatchOutcome,
        events: list[IncomingEvent],
        records: dict[tuple[str, int, int], ConsumedRecord] | None = None,
    ) -> None:
        committed_at = time.time()
        if outcome.applied_events:
            metrics.consumer_applied_batch_latency_observed(
                rows=[(event.topic, event.occurred_at) for event in outcome.applied_events], applied_at=timezone.now()
            )
            if self.on_applied is not None:
                self.on_applied(outcome.applied_events, committed_at, records or {})
        for topic, counts in outcome.by_topic.items():
            metrics.consumer_records_observed(topic=topic, applied=counts.applied, duplicates=counts.duplicates)
            for kind, count in counts.dead_lettered.items():
                metrics.consumer_records_observed(topic=topic, dead_lettered=count, error=kind)
        for key in outcome.cache_keys_to_delete:
            try:
                cache.delete(key)
            except Exception:  # noqa: BLE001 - a stale cache entry expires by itself
                logger.warning("cache invalidation failed", extra={"cache_key": key})
        for tp, tp_records in polled.items():
            self._applied_offsets[tp] = self._positions[tp] = tp_records[-1].offset + 1
        self.offsets_commit(wait=False)
        self.stats.batches += 1
        self.stats.polled += sum(len(records) for records in polled.values())
        self.stats.applied += outcome.applied
        self.stats.duplicates += outcome.duplicates
        self.stats.dead_lettered += outcome.dead_lettered
        if logger.isEnabledFor(logging.DEBUG):
            for event in events:
                with trace_context(event.traceparent or None):
                    logger.debug(
                        "event handled",
                        extra={
                            "event_id": str(event.event_id),
                            "event_type": event.event_type,
                            "topic": event.topic,
                            "partition": event.partition,
                            "offset": event.offset,
                        },
                    )

    def offsets_commit(self, *, wait: bool = True) -> None:
        """Commit the offsets of the batches applied (their transactions committed).

        `wait=False` (after each batch) sends the commit and returns: the broker's answer is
        read at the next call, and an offset whose commit failed stays in `_applied_offsets`
        for the next commit. Waiting for it was a seventh of the loop's wall time on a loaded
        machine (docs/BACKOFFICE.md). One such commit at a time: while one is unanswered, the
        batches applied since wait for the next call (their offsets go in one commit), where a
        commit per batch filled the connection's in-flight requests and the client refused the
        rest. A commit lost with the process only redelivers batches the inbox already holds.
        Closing commits and waits (a revocation: `offsets_commit_revoked`)."""
        self._commits_harvest()
        if not wait and self._commits_in_flight:
            return
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._applied_offsets.items()}
        if not offsets:
            return
        if not wait:
            try:
                future = self.consumer.commit_async(offsets)
            except KafkaError as exc:
                logger.warning("offset commit failed; kept for the next commit", extra={"error": repr(exc)})
                return
            self._commits_in_flight.append((future, offsets))
            return
        try:
            self.consumer.commit(offsets, timeout_ms=10000)
            for tp in offsets:
                self._applied_offsets.pop(tp, None)
        except CommitFailedError as exc:
            # The group moved on without us: the new owner re-reads from the last commit and
            # the inbox absorbs what we already applied.
            logger.warning("offset commit refused after a rebalance", extra={"error": str(exc)})
            for tp in offsets:
                self._applied_offsets.pop(tp, None)
        except KafkaError as exc:
            logger.warning("offset commit failed; kept for the next commit", extra={"error": repr(exc)})

    def offsets_commit_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit the applied offsets of partitions being revoked, without waiting.

        kafka-python 3 calls the rebalance listener on its IO thread, where a blocking commit
        raises ("Cannot block on net.run() from the IO thread itself") and fails the rejoin:
        the member is stuck out of the group. Sent from here, the commit goes out on the
        coordinator's connection ahead of the rejoin. Should it fail (logged), the next owner
        re-reads those batches and the inbox absorbs them."""
        self._commits_harvest()
        offsets = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._applied_offsets.items() if tp in revoked
        }
        self.offsets_forget(revoked)
        if not offsets:
            return

        def failed_logged(_: object, response: object) -> None:
            if isinstance(response, Exception):
                logger.warning("offset commit on revocation failed", extra={"error": repr(response)})

        try:
            self.consumer.commit_async(offsets, callback=failed_logged)
        except KafkaError as exc:
            logger.warning("offset commit on revocation failed", extra={"error": repr(exc)})

    def offsets_forget(self, partitions: set[TopicPartition]) -> None:
        """The partitions are their next owner's to commit: out of `_applied_offsets`, and out of
        the commits in flight, whose late answer must not touch what a later assignment of the
        same partition to this member applies."""
        for tp in partitions:
            self._applied_offsets.pop(tp, None)
        for _, offsets in self._commits_in_flight:
            for tp in partitions:
                offsets.pop(tp, None)

    def _commits_harvest(self) -> None:
        """Read the answers of the commits sent without waiting: a committed offset (or one the
        group refused after a rebalance: the new owner re-reads from the last commit) leaves
        `_applied_offsets` unless a later batch moved it; a failed one stays for the next."""
        in_flight = []
        for future, offsets in self._commits_in_flight:
            if not future.is_done:
                in_flight.append((future, offsets))
                continue
            if future.failed() and not isinstance(future.exception, CommitFailedError):
                logger.warning(
                    "offset commit failed; kept for the next commit", extra={"error": repr(future.exception)}
                )
                continue
            if future.succeeded() and future.value is not None:
                # Not the commit's answer (None): with the coordinator unknown, kafka-python 3
                # returns its lookup's future (the coordinator's id) and sends the commit later,
                # unwatched. Kept for the next commit.
                continue
            for tp, committed in offsets.items():
                if self._applied_offsets.get(tp) == committed.offset:
                    del self._applied_offsets[tp]
        self._commits_in_flight = in_flight

    # --- helpers -----------------------------------------------------------------------------

    def _seek_back(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in polled.items():
            self.consumer.seek(tp, records[0].offset)

    def _back_off(self, message: str, exc: BaseException, *, attempt: int = 1) -> None:
        self.stats.retries += 1
        delay = min(30.0, 0.2 * (2 ** min(attempt, 8)))
        logger.warning(message, extra={"error": f"{type(exc).__name__}: {exc}"[:500], "retry_in_s": round(delay, 2)})
        # A dropped database connection is useless now: the next attempt opens a new one.
        with contextlib.suppress(DatabaseError):
            connection.close()
        close_old_connections()
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(0.1)

    def _progress_line(self, polled: int, seconds: float) -> str:
        lag = self.lag()
        return (
            f"consumed {self.stats.polled} (applied {self.stats.applied}, duplicates "
            f"{self.stats.duplicates}, dead letters {self.stats.dead_lettered}); "
            f"{polled / seconds if seconds else 0:.0f} events/s; lag {lag}"
        )

    def _lag_observe(self) -> None:
        """The lag gauge of every assigned partition: the high watermark of the last fetch
        response minus the next offset to apply, both known locally (no request to the broker
        per record; `position()` only for a partition nothing was applied from yet)."""
        for tp in self.consumer.assignment():
            try:
                highwater = self.consumer.highwater(tp)
                if highwater is None:
                    continue  # nothing fetched from it yet
                position = self._positions.get(tp)
                if position is None:
                    position = highwater if highwater == 0 else self.consumer.position(tp, timeout_ms=200)
            except KafkaError:
                continue
            if position is not None:
                metrics.consumer_lag_observed(topic=tp.topic, partition=tp.partition, lag=max(0, highwater - position))

    def lag(self) -> int | None:
        assignment = list(self.consumer.assignment())
        if not assignment:
            return None
        try:
            ends = self.consumer.end_offsets(assignment)
            lag = 0
            for tp in assignment:
                end = ends[tp]
                position = self.consumer.position(tp)
                if position is None:  # no position known yet: neither is the lag
                    return None
                lag += max(0, end - position)
            return lag
        # KeyError: kafka-python leaves out of end_offsets the partitions of a topic deleted
        # since the assignment (until the group rebalances), then indexes them.
        except (KafkaError, KeyError):
            return None
