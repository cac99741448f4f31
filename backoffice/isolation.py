"""Records to applied effects, with a second line of defence behind the contract.

The contract (backoffice/contract.py) bounds every value to its column, so an accepted record
is one the database stores. Should a value still be refused (a bound loosened by mistake, a
counter that overflows only once summed, a database stricter than expected), the batch fails
the same way on every attempt, and retrying it forever would block its partitions. So an error
that repeats on the same batch, and is not the database or the broker being away, is bisected
down to the record that causes it: that record is dead-lettered with the database's message, and
every other record of the batch is applied, in partition order, each exactly once (the inbox).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from django.db import DatabaseError, DataError, IntegrityError
from kafka.errors import KafkaError

from backoffice.contract import ContractViolation, IncomingEvent, event_parse
from backoffice.projections import DATABASE_REFUSED, BatchOutcome, PoisonRecord, TopicCounts, batch_apply

logger = logging.getLogger(__name__)

# SQLSTATE classes of a value the database refuses: data exception (out of range, too long,
# invalid text), integrity constraint violation, program limit exceeded. Any other database
# error (away, busy, a missing table) is retried on the same batch, never skipped.
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


class ConsumedRecord(Protocol):
    # Read-only: kafka-python's ConsumerRecord is a namedtuple (and a test's record is frozen).
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


def error_is_transient(exc: BaseException) -> bool:
    """True when the error says a dependency is away or the schema is wrong (retry the same
    batch, never skip), False when it may be the data's (a value refused: repeat, then isolate
    the record)."""
    if isinstance(exc, KafkaError):
        return True
    if isinstance(exc, DatabaseError):
        driver_error = exc.__cause__  # Django's wrapper of the driver's error
    elif isinstance(exc, psycopg.Error):
        # The bulk statements (backoffice/bulk.py) run on the driver's own cursor: its errors
        # reach here unwrapped, and a lock timeout is no more the data's than through Django.
        driver_error = exc
    else:
        return False  # OverflowError, ValueError...: raised by a value on its way to the database
    sqlstate = getattr(driver_error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] not in _DATA_SQLSTATE_CLASSES
    # No SQLSTATE: SQLite's errors ("database is locked" is an OperationalError), or libpq's
    # own (the connection lost); a value the driver cannot send is a DataError.
    return not isinstance(exc, DataError | IntegrityError | psycopg.DataError | psycopg.IntegrityError)


@dataclass
class ParsedBatch:
    events: list[IncomingEvent]
    poison: list[PoisonRecord]
    records: dict[tuple[str, int, int], ConsumedRecord]

    def poison_of(self, event: IncomingEvent, error: str) -> PoisonRecord:
        record = self.records[(event.topic, event.partition, event.offset)]
        return PoisonRecord(
            record.topic, record.partition, record.offset, record.key, record.value, list(record.headers or []), error
        )


def records_parse(records: Iterable[ConsumedRecord]) -> ParsedBatch:
    """Every record as an event of the contract, or as poison with the reason."""
    batch = ParsedBatch(events=[], poison=[], records={})
    for record in records:
        batch.records[(record.topic, record.partition, record.offset)] = record
        try:
            batch.events.append(
                event_parse(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers or []),
                )
            )
        except ContractViolation as exc:
            batch.poison.append(
                PoisonRecord(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.key,
                    record.value,
                    list(record.headers or []),
                    str(exc),
                )
            )
    return batch


Forward = Callable[[list[PoisonRecord]], None]


def batch_apply_isolating(*, group: str, batch: ParsedBatch, forward: Forward) -> BatchOutcome:
    """Apply the batch in one transaction; if a non-transient error repeats on it, bisect it and
    dead-letter the record(s) that cause it. Raises only transient errors (the caller retries
    the whole batch; the inbox skips what a partial pass already applied)."""
    forward = forward_once(forward)
    for attempt in (1, 2):
        try:
            return _apply(group, batch.events, batch.poison, forward, batch.records)
        except Exception as exc:
            if error_is_transient(exc):
                raise
            logger.warning(
                "batch refused by the database",
                extra={"attempt": attempt, "error": _message(exc)[:500], "records": len(batch.records)},
            )
    outcome = _apply(group, [], batch.poison, forward, batch.records) if batch.poison else BatchOutcome()
    _bisect(group, batch, batch.events, forward, outcome)
    return outcome


def _bisect(
    group: str, batch: ParsedBatch, events: list[IncomingEvent], forward: Forward, outcome: BatchOutcome
) -> None:
    if not events:
        return
    # A single record is tried twice: dead-lettered only for an error that repeats on it (an
    # inbox race with another consumer of the group does not).
    error: Exception | None = None
    for _ in range(2 if len(events) == 1 else 1):
        try:
            _merge(outcome, _apply(group, events, [], forward, batch.records))
            return
        except Exception as exc:
            if error_is_transient(exc):
                raise
            error = exc
    if len(events) == 1:
        assert error is not None  # every try raised: a successful one returned above
        letter = batch.poison_of(events[0], f"{DATABASE_REFUSED}: {_message(error)}")
        _merge(outcome, _apply(group, [], [letter], forward, batch.records))
        return
    middle = len(events) // 2
    # The first half first: the records of a partition are applied in their order.
    _bisect(group, batch, events[:middle], forward, outcome)
    _bisect(group, batch, events[middle:], forward, outcome)


def _apply(
    group: str,
    events: list[IncomingEvent],
    poison: list[PoisonRecord],
    forward: Forward,
    records: dict[tuple[str, int, int], ConsumedRecord],
) -> BatchOutcome:
    if poison:
        forward(poison)
    return batch_apply(group=group, events=events, poison=poison, records=records)


class ForwardOnce:
    """A forward that sends each poison record once however often its batch is tried again: in
    the bisection, and by the consumer after a transient error (made once per batch, outside its
    retries)."""

    def __init__(self, forward: Forward) -> None:
        self._forward = forward
        self._sent: set[tuple[str, int, int]] = set()

    def __call__(self, poison: list[PoisonRecord]) -> None:
        new = [p for p in poison if (p.topic, p.partition, p.offset) not in self._sent]
        if new:
            self._forward(new)
            self._sent.update((p.topic, p.partition, p.offset) for p in new)


def forward_once(forward: Forward) -> Forward:
    return forward if isinstance(forward, ForwardOnce) else ForwardOnce(forward)


def _merge(total: BatchOutcome, part: BatchOutcome) -> None:
    total.applied += part.applied
    total.duplicates += part.duplicates
    total.dead_lettered += part.dead_lettered
    total.cache_keys_to_delete.extend(part.cache_keys_to_delete)
    total.applied_events.extend(part.applied_events)
    for topic, counts in part.by_topic.items():
        into = total.by_topic.setdefault(topic, TopicCounts())
        into.applied += counts.applied
        into.duplicates += counts.duplicates
        for kind, count in counts.dead_lettered.items():
            into.dead_lettered[kind] = into.dead_lettered.get(kind, 0) + count


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()
