"""What the steps of a drain pass to each other: the claimed row, the drain's result, backoff."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.db.models import Field
from kafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from kafka.producer.future import RecordMetadata

from outbox.envelope import iso_utc
from outbox.models import OutboxEvent

# What the send of one row ended with: the broker's acknowledgement, or the exception it failed
# with (`NotSent` for a row never handed to the producer, or dropped with it).
Outcome = RecordMetadata | BaseException


def pg_int_array(values: list[int] | list[int | None]) -> str:
    """A PostgreSQL array literal of integers (NULL for None), to be cast in the SQL
    (`%(seqs)s::bigint[]`): psycopg adapts a list item by item, which costs the relay more per
    batch than the statement it is sent with."""
    return "{" + ",".join("NULL" if value is None else str(int(value)) for value in values) + "}"


def outbox_column(name: str) -> Field[Any, Any]:
    """OutboxEvent's column `name` (its own columns only: never the relation `get_field` may also
    return, hence the cast)."""
    return cast("Field[Any, Any]", OutboxEvent._meta.get_field(name))


# Errors that no retry can cure: the row is marked dead at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TypeError,
    ValueError,
)
SEND_FIELDS = [
    "seq",
    "event_id",
    "topic",
    "key",
    "type",
    "event_version",
    "aggregatetype",
    "aggregateid",
    "aggregate_version",
    "headers",
    "occurred_at",
    "attempts",
]


class ProducerUnavailable(KafkaError):
    """The producer could not be made or used at all: retriable, whatever the cause was."""

    retriable = True


class TopicMissing(KafkaError):
    """The cluster has no such topic (deleted by mistake, not made yet): the row waits in backoff
    while the other topics' rows go out (outbox/relay/send.py, `MissingTopics`). Not the row's
    attempt: its attempts are not counted (a relay that died holding a row with many would make
    it dead at the next claim), and its backoff grows with how long the topic has been missing
    (`backoff_s`) instead. Retriable: the topic may be made again."""

    retriable = True

    def __init__(self, message: str, *, backoff_s: float) -> None:
        super().__init__(message)
        self.backoff_s = backoff_s


class NotSent(Exception):
    """The outcome of a row the send stopped before (or whose send was abandoned): the write-back
    releases it untouched, no attempt counted."""


@dataclass
class DrainResult:
    published: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    held: int = 0  # failed because their topic is missing (counted in `failed` too)
    fenced_out: int = 0
    batches: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def failed_not_held(self) -> int:
        """Failures other than rows of a missing topic: a reason to stop claiming (backoff)."""
        return self.failed - self.held

    def as_dict(self) -> dict[str, object]:
        return {
            "published": self.published,
            "failed": self.failed,
            "dead": self.dead,
            "released": self.released,
            "held": self.held,
            "fenced_out": self.fenced_out,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(max, base * 2^attempts)]."""
    ceiling = min(settings.OUTBOX_BACKOFF_MAX, settings.OUTBOX_BACKOFF_BASE * (2 ** max(attempts - 1, 0)))
    return random.uniform(min(settings.OUTBOX_BACKOFF_BASE / 2, ceiling), ceiling)


def topic_missing_backoff_seconds(missing_for_s: float) -> float:
    """The backoff of a row whose topic has been missing for `missing_for_s`: about as long again
    (a topic made again soon is followed soon), within [base/2, max], with full jitter."""
    ceiling = min(settings.OUTBOX_BACKOFF_MAX, max(settings.OUTBOX_BACKOFF_BASE, 2 * missing_for_s))
    return random.uniform(ceiling / 2, ceiling)


def unfinished_statuses() -> list[str]:
    """The statuses of a row that holds its key's later rows back."""
    if settings.OUTBOX_DEAD_BLOCKS_KEY:
        return [OutboxEvent.Status.PENDING, OutboxEvent.Status.DEAD]
    return [OutboxEvent.Status.PENDING]


@dataclass(slots=True)
class ClaimedRow:
    """What the relay needs of a claimed row: plain values, no model instance per row."""

    seq: int
    event_id: str
    topic: str
    key: str
    type: str
    event_version: int
    aggregatetype: str
    aggregateid: str
    aggregate_version: int | None
    # The row's headers as the claim read them: JSON text from PostgreSQL, parsed on first use
    # (`headers`): by the sender thread, off the drain's path of claim and write-back.
    headers_stored: dict[str, Any] | str
    occurred_at: str  # ISO-8601 UTC, as the header carries it
    attempts: int
    payload_text: str
    status: str = OutboxEvent.Status.PENDING
    last_error: str = ""
    available_at: datetime | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    abandoned: bool = False  # its last relay died (or outlived its lease) holding it

    @property
    def headers(self) -> dict[str, Any]:
        stored = self.headers_stored
        if isinstance(stored, str):
            stored = self.headers_stored = json.loads(stored)
        return stored

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.payload_text)
        return payload

    @classmethod
    def from_orm_values(cls, values: tuple[Any, ...]) -> ClaimedRow:
        """From `values_list(*SEND_FIELDS, "payload_text")`."""
        (
            seq,
            event_id,
            topic,
            key,
            type_,
            event_version,
            aggregatetype,
            aggregateid,
            aggregate_version,
            headers,
            occurred_at,
            attempts,
            payload_text,
        ) = values
        return cls(
            seq,
            str(event_id),
            topic,
            key,
            type_,
            event_version,
            aggregatetype,
            aggregateid,
            aggregate_version,
            headers,
            iso_utc(occurred_at),
            attempts,
            payload_text,
        )
