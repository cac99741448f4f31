"""The relay's optional producer on confluent-kafka (librdkafka): `KAFKA_CLIENT=confluent`.

kafka-python stays the default client. This adapter gives the relay what it uses of
kafka-python's `KafkaProducer`: `send()` returning a future (kafka-python's own `Future`, with `get()`; its
value kafka-python's `RecordMetadata`), `flush()`, `close()`, `partitions_for()`.
librdkafka reports deliveries only from `poll()`: a daemon thread polls for the producer's whole
life, so a future completes as soon as the broker's answer is read, as kafka-python's does from
its I/O thread.

librdkafka's errors are turned into kafka-python's exception classes (`delivery_error`): the
write-back tells permanent failures from retriable ones by those classes (outbox/relay/rows.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, cast

import confluent_kafka
from kafka import errors as kafka_errors
from kafka.future import Future
from kafka.producer.future import RecordMetadata
from kafka.structs import TopicPartition

logger = logging.getLogger("outbox.kafka")

# A future completes once, from whichever thread reports it first.
_COMPLETION = threading.Lock()

# How long the poll thread blocks in one poll(): it returns at once when a delivery report is
# ready, so this bounds only how soon the thread sees a close.
POLL_TIMEOUT_S = 0.1


def delivery_error(error: confluent_kafka.KafkaError) -> BaseException:
    """librdkafka's error as the kafka-python exception of the same meaning.

    A broker's error code (0 and up) is the Kafka protocol's, which kafka-python maps to its
    classes (`MSG_SIZE_TOO_LARGE` is MessageSizeTooLargeError, a permanent error). librdkafka's
    own codes are below 0: the ones the relay must tell apart are mapped, the rest are a
    retriable KafkaError that keeps librdkafka's name and text.
    """
    code = error.code()
    message = f"{error.name()}: {error.str()}"
    if code >= 0:
        found: type[kafka_errors.KafkaError] = kafka_errors.for_code(code)  # type: ignore[no-untyped-call]
        return found(message)
    own: dict[int, type[kafka_errors.KafkaError]] = {
        confluent_kafka.KafkaError._MSG_TIMED_OUT: kafka_errors.KafkaTimeoutError,
        confluent_kafka.KafkaError._TIMED_OUT: kafka_errors.KafkaTimeoutError,
        confluent_kafka.KafkaError._UNKNOWN_TOPIC: kafka_errors.UnknownTopicOrPartitionError,
        confluent_kafka.KafkaError._UNKNOWN_PARTITION: kafka_errors.UnknownTopicOrPartitionError,
    }
    if error.fatal():
        return kafka_errors.IllegalStateError(message)
    return own.get(code, _LibrdkafkaError)(message)


class _LibrdkafkaError(kafka_errors.KafkaError):
    """A librdkafka error with no kafka-python counterpart (a purge, a transport failure)."""

    retriable = True


class ConfluentDeliveryFuture(Future):
    """One record's delivery, as kafka-python's future: done (`is_done`, `exception`, `value`
    a RecordMetadata, callbacks run) when librdkafka reports it, from the poll thread."""

    def __init__(self) -> None:
        super().__init__()
        # No threading.Event per record (its Condition cost more of the sender's time than the
        # rest of a send): one is made only for a get() that comes before the report.
        self._waiter: threading.Event | None = None
        self._claimed = False  # by the first report (the poll thread's, or a closing thread's)
        self._reported = False  # complete, its outcome set: what get() waits for

    def _claim(self) -> bool:
        with _COMPLETION:  # held for the check-and-set only: callbacks run outside it
            if self._claimed:
                return False
            self._claimed = True
            return True

    def _reported_now(self) -> None:
        with _COMPLETION:
            self._reported = True
            waiter = self._waiter
        if waiter is not None:
            waiter.set()

    def delivered(self, error: confluent_kafka.KafkaError | None, message: confluent_kafka.Message) -> None:
        if self._claim():
            self._complete(error, message)
            self._reported_now()

    def abandoned(self, error: BaseException) -> None:
        """Failed without a report from librdkafka (the producer closed before it came)."""
        if self._claim():
            self.failure(error)
            self._reported_now()

    def _complete(self, error: confluent_kafka.KafkaError | None, message: confluent_kafka.Message) -> None:
        if error is not None:
            self.failure(delivery_error(error))
        else:
            topic, partition = message.topic() or "", message.partition() or 0
            _, timestamp_ms = message.timestamp()
            self.success(
                RecordMetadata(
                    topic,
                    partition,
                    TopicPartition(topic, partition),
                    message.offset() or 0,
                    timestamp_ms,
                    None,
                    len(message.key() or b""),
                    len(message.value() or b""),
                    -1,
                )
            )

    def get(self, timeout: float | None = None) -> RecordMetadata:
        with _COMPLETION:
            if not self._reported and self._waiter is None:
                self._waiter = threading.Event()
            waiter = None if self._reported else self._waiter
        if waiter is not None and not waiter.wait(timeout):
            raise kafka_errors.KafkaTimeoutError(f"no delivery report after {timeout} s")
        if self.exception is not None:
            raise self.exception
        return cast(RecordMetadata, self.value)


def confluent_config(config: dict[str, Any]) -> dict[str, Any]:
    """librdkafka's names for the settings of `producer_config()` (outbox/kafka.py)."""
    renamed = {
        "security_protocol": "security.protocol",
        "sasl_mechanism": "sasl.mechanism",
        "sasl_plain_username": "sasl.username",
        "sasl_plain_password": "sasl.password",
        "ssl_cafile": "ssl.ca.location",
        "ssl_certfile": "ssl.certificate.location",
        "ssl_keyfile": "ssl.key.location",
    }
    found = {
        "bootstrap.servers": ",".join(config["bootstrap_servers"]),
        "acks": str(config["acks"]),
        "enable.idempotence": config["enable_idempotence"],
        "max.in.flight.requests.per.connection": config["max_in_flight_requests_per_connection"],
        "linger.ms": config["linger_ms"],
        "batch.size": config["batch_size"],
        "request.timeout.ms": config["request_timeout_ms"],
        "message.timeout.ms": config["delivery_timeout_ms"],
        # A record for a topic the producer cannot find fails after this long (librdkafka's own
        # default is 30 s): as kafka-python's max_block_ms, well within the batch's half lease.
        "topic.metadata.propagation.max.ms": config["max_block_ms"],
        "socket.connection.setup.timeout.ms": config["bootstrap_timeout_ms"],
        "client.id": config["client_id"],
        # kafka-python's partitioner (murmur2 of the key): with librdkafka's default (CRC32) a key
        # would land on another partition than with kafka-python, and switching clients, or a
        # rolling deploy running both, would break its order.
        "partitioner": "murmur2_random",
        # kafka-python's max_request_size (librdkafka's own default is 1,000,000): a record
        # kafka-python delivers is not refused as too large here (a permanent error: dead).
        "message.max.bytes": config["max_request_size"],
        # librdkafka logs that this is a consumer property, but its producer's metadata
        # requests honour it (confluent-kafka-go#780): topics are made by `ensure_topics`.
        "allow.auto.create.topics": config["allow_auto_create_topics"],
        "logger": logging.getLogger("outbox.kafka.librdkafka"),
    }
    for name, value in config.items():
        if name in renamed:
            found[renamed[name]] = value
    return found


class ConfluentProducer:
    """An idempotent librdkafka producer, used as the relay uses kafka-python's."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._fatal: BaseException | None = None
        self._closed = False
        # Records handed over and not yet reported: flush() waits for none; close() fails those
        # a purge left unreported, so no future waits for its deadline.
        self._pending: set[ConfluentDeliveryFuture] = set()
        self._lock = threading.Condition()  # guards _closed and _pending; send() vs close()
        self._producer = confluent_kafka.Producer({**confluent_config(config), "error_cb": self._on_error})
        self._poller = threading.Thread(target=self._poll_until_closed, name="outbox-confluent-poll", daemon=True)
        self._poller.start()
        # librdkafka connects in the background and would hold every record until its
        # message.timeout.ms: without a broker to bootstrap from, fail here as kafka-python does
        # (bootstrap_timeout_ms), so a drain during an outage records its failure at once.
        try:
            self._producer.list_topics(timeout=config["bootstrap_timeout_ms"] / 1000)
        except confluent_kafka.KafkaException as exc:
            self.close(0)
            raise kafka_errors.KafkaConnectionError(f"no broker answered: {exc.args[0].str()}") from exc

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        if error.fatal():
            self._fatal = delivery_error(error)
            logger.error("kafka producer fatal error", extra={"error": repr(self._fatal)})
        else:
            # A broker down, a connection refused: librdkafka retries by itself, and its own log
            # line (outbox.kafka.librdkafka) already says it.
            logger.debug("kafka producer error", extra={"error": f"{error.name()}: {error.str()}"})

    def _poll_until_closed(self) -> None:
        while not self._closed:
            try:
                self._producer.poll(POLL_TIMEOUT_S)
            except Exception:  # a callback raised: poll() re-raises it; the thread must live on
                logger.exception("kafka producer poll failed")

    def _reported(
        self, future: ConfluentDeliveryFuture, error: confluent_kafka.KafkaError | None, message: Any
    ) -> None:
        try:
            future.delivered(error, message)
        finally:
            with self._lock:
                self._pending.discard(future)
                if not self._pending:
                    self._lock.notify_all()

    def topic_present(self, topic: str, *, timeout_s: float) -> bool:
        """Whether the cluster has `topic` (a metadata request for it; False without an answer)."""
        try:
            metadata = self._producer.list_topics(topic, timeout=timeout_s)
        except confluent_kafka.KafkaException:
            return False
        found = metadata.topics.get(topic)
        return found is not None and found.error is None and bool(found.partitions)

    def broken(self) -> BaseException | None:
        """Why this producer can deliver nothing any more (closed, fatal error), or None."""
        if self._closed:
            return kafka_errors.IllegalStateError("the producer is closed")
        if not self._poller.is_alive():
            return kafka_errors.IllegalStateError("the producer's poll thread is not running")
        return self._fatal

    def send(
        self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> ConfluentDeliveryFuture:
        future = ConfluentDeliveryFuture()

        def reported(error: confluent_kafka.KafkaError | None, message: confluent_kafka.Message) -> None:
            self._reported(future, error, message)

        # Under the lock with close(): once close() purged, nothing more is handed over (a record
        # produced after the purge would still go out, after the failed row of its key).
        with self._lock:
            if self._closed:
                raise kafka_errors.IllegalStateError("the producer is closed")
            try:
                # (list() of the same pairs: the stubs want the wider item type librdkafka takes.)
                self._producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=reported)
            except confluent_kafka.KafkaException as exc:
                # Refused before it was queued (too large, unknown partition, a fatal state).
                raise delivery_error(exc.args[0]) from exc
            except BufferError as exc:
                raise kafka_errors.KafkaTimeoutError(f"the producer's queue is full: {exc}") from exc
            self._pending.add(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Send what lingers at once, and wait until every record handed over is reported.

        Not librdkafka's flush() alone: it serves the reports itself in polls of up to 10 ms, and
        when the poll thread takes the last report first, the flush sleeps out its 10 ms poll
        (seen as a 10 ms gap between the ack and the write-back in 1 cycle of 10 at 100/s).
        Its flush(0) only wakes the brokers' threads to send what lingers; the wait is here.
        """
        self._producer.flush(0)
        with self._lock:
            if not self._lock.wait_for(lambda: not self._pending, timeout):
                raise kafka_errors.KafkaTimeoutError(f"{len(self._pending)} records unreported after {timeout} s")

    def partitions_for(self, topic: str) -> set[int] | None:
        found = self._producer.list_topics(topic, timeout=5).topics.get(topic)
        if found is None or found.error is not None:
            return None
        return set(found.partitions)

    def close(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` for what was sent; then drop the rest: purged from librdkafka's
        queues (never sent from here), its futures failed. `close(0)` after a failure: nothing
        the producer still holds reaches the broker after the failed record."""
        if timeout is None or timeout > 0:
            with contextlib.suppress(kafka_errors.KafkaTimeoutError):
                self.flush(timeout)
        with self._lock:
            # Set under the lock: a send() in progress has returned, no later one produces.
            if self._closed:
                return
            self._closed = True
        # A purge that waits until librdkafka's broker threads dropped what they held, so that
        # nothing queued goes out after close() returned. confluent-kafka 2.16.1's binding has
        # the `blocking` flag reversed (Producer_purge sets RD_KAFKA_PURGE_F_NON_BLOCKING when
        # it is true): one call of each is a waiting purge whether or not a later version
        # fixes it (the second is then a no-op). It holds the GIL while it waits: brief.
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)
        # The purged records' reports (served here: the poll thread is stopping).
        deadline = time.monotonic() + 1.0
        while self._pending and time.monotonic() < deadline:
            self._producer.poll(0.01)
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
            self._lock.notify_all()  # a flush() waiting in another thread returns now
        for future in left:
            future.abandoned(_LibrdkafkaError("the producer was closed before the broker answered"))
        self._poller.join(timeout=2 * POLL_TIMEOUT_S + 1)
