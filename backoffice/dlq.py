"""The copy of each dead letter on `<topic>.dlq`, with the error in its headers (the DeadLetter
row is written in the batch's transaction; backoffice/projections.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.conf import settings
from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from kafka.producer.future import FutureRecordMetadata

from backoffice.projections import PoisonRecord

# The consumer's logger: "record dead-lettered" is the consumer's line (alerts and docs read it).
logger = logging.getLogger("backoffice.consumer")


# A copy the producer (over its max_request_size) or the broker (over the topic's
# max.message.bytes) refuses as too large: the next, smaller copy goes instead.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)

Copy = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def dead_letter_copies(record: PoisonRecord, *, group_id: str) -> Iterator[Copy]:
    """The record's copies for its `.dlq` topic (key, value, headers), each smaller than the last;
    the first one Kafka takes is sent. Whole (a null value with a key as it came); without its
    value; with nothing of the record but the dead-letter headers (its key or headers alone may
    be too large). A record with neither key nor value, which no producer sends, goes with an
    empty value. The `dlq_value` header of a copy without the value says what it was: "null", or
    "omitted: N bytes" (the DeadLetter row keeps the record whole)."""
    dead_letter = [
        ("dlq_error", record.error.encode()[:4000]),
        ("dlq_source_topic", record.topic.encode()),
        ("dlq_source_partition", str(record.partition).encode()),
        ("dlq_source_offset", str(record.offset).encode()),
        ("dlq_consumer_group", group_id.encode()),
    ]
    # A header without a value goes as an empty one: the producer sends bytes only.
    headers = [
        (name, b"" if raw is None else raw if isinstance(raw, bytes) else str(raw).encode())
        for name, raw in record.headers
    ]
    value_was = (
        b"null" if record.value is None else f"omitted: {len(record.value)} bytes, in the dead-letter table".encode()
    )
    if record.key is not None or record.value is not None:
        yield record.key, record.value, headers + dead_letter
    if record.value is not None or record.key is None:
        yield record.key, b"", [*headers, ("dlq_value", value_was), *dead_letter]
    yield None, b"", [("dlq_value", value_was), ("dlq_key_and_headers", b"omitted"), *dead_letter]


class DeadLetterForwarder:
    """Sends poison records to their `.dlq` topic and waits for the broker's ack: an error is
    raised (the batch is retried, never skipped), except a copy refused as too large, which is
    sent again smaller (`dead_letter_copies`). The producer is made at the first letter."""

    def __init__(self, *, group_id: str) -> None:
        self.group_id = group_id
        self._producer: KafkaProducer | None = None

    def __call__(self, poison: list[PoisonRecord]) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                max_block_ms=5000,
                **settings.KAFKA_SECURITY,
            )
        for record in poison:
            logger.warning(
                "record dead-lettered",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error": record.error,
                },
            )
        unsent = [(record, dead_letter_copies(record, group_id=self.group_id)) for record in poison]
        while unsent:
            sent = [(record, copies, self._send_first_taken(record, copies)) for record, copies in unsent]
            self._producer.flush(timeout=30)
            unsent = []
            for record, copies, future in sent:
                try:
                    # Raises the send's error: the batch is retried, never skipped.
                    future.get(timeout=0)  # type: ignore[no-untyped-call]  # get() unannotated in types-kafka-python
                except _TOO_LARGE:
                    unsent.append((record, copies))  # the broker's limit: the next copy

    def _send_first_taken(self, record: PoisonRecord, copies: Iterator[Copy]) -> FutureRecordMetadata:
        assert self._producer is not None
        for key, value, headers in copies:
            try:
                return self._producer.send(f"{record.topic}.dlq", key=key, value=value, headers=headers)
            except _TOO_LARGE:
                continue  # the producer's own limit: the next copy
        raise MessageSizeTooLargeError(f"no copy of {record.topic}:{record.partition}:{record.offset} fits")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
