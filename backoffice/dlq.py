"""The copy of each dead letter on `<topic>.dlq`, with the error in its headers (the DeadLetter
row is written in the batch's transaction; backoffice/projections.py)."""

from __future__ import annotations

import logging

from django.conf import settings
from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from backoffice.projections import PoisonRecord

# The consumer's logger: "record dead-lettered" is the consumer's line (alerts and docs read it).
logger = logging.getLogger("backoffice.consumer")


class DeadLetterForwarder:
    """Sends poison records to their `.dlq` topic and waits for the broker's ack: an error is
    raised (the batch is retried, never skipped). The producer is made at the first letter."""

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
        futures: list[FutureRecordMetadata] = []
        for record in poison:
            headers = [(name, raw if isinstance(raw, bytes) else str(raw).encode()) for name, raw in record.headers]
            headers += [
                ("dlq_error", record.error.encode()[:4000]),
                ("dlq_source_topic", record.topic.encode()),
                ("dlq_source_partition", str(record.partition).encode()),
                ("dlq_source_offset", str(record.offset).encode()),
                ("dlq_consumer_group", self.group_id.encode()),
            ]
            futures.append(
                self._producer.send(f"{record.topic}.dlq", key=record.key, value=record.value, headers=headers)
            )
            logger.warning(
                "record dead-lettered",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error": record.error,
                },
            )
        self._producer.flush(timeout=30)
        for future in futures:
            # Raises the send's error: the batch is retried, never skipped.
            future.get(timeout=0)  # type: ignore[no-untyped-call]  # get() unannotated in types-kafka-python

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
