"""The Kafka clients of the outbox: one long-lived producer per process, and the admin client.

The producer is created lazily in the process that uses it (after a Celery worker forked, never
before: a producer's sockets and threads do not survive a fork) and closed when it exits. A
thread that relays beside another in the same process (the relay loop's full drain) uses a
producer of its own (`producer_own`): a drain that drops its producer after a failed send must
not fail the other's records in flight. It is
kafka-python's `KafkaProducer`, or with `KAFKA_CLIENT=confluent` the librdkafka one behind the
same small interface (outbox/kafka_confluent.py): `send`, its future, `flush`, `close`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import IllegalStateError
from kafka.partitioner.default import DefaultPartitioner, murmur2

if TYPE_CHECKING:
    from outbox.kafka_confluent import ConfluentProducer

    RelayProducer = KafkaProducer | ConfluentProducer


class DeliveryFuture(Protocol):
    """What the relay reads of a sent record's future, whichever the client."""

    is_done: bool
    exception: BaseException | None
    value: Any

    def get(self, timeout: float | None = None) -> Any: ...


logger = logging.getLogger(__name__)

KAFKA_CLIENTS = ("kafka-python", "confluent")

_lock = threading.Lock()  # guards `_slots`; each slot has a lock of its own

# How long a dropped kafka-python producer's I/O thread is given to fail what it held and exit.
DROP_JOIN_S = 2.0


class _ProducerSlot:
    """A producer and the pid that made it (a forked child must make its own).

    Its own lock: making a producer (a bootstrap of up to `bootstrap_timeout_ms`) or dropping one
    for one relay thread never holds up the other's `producer_get`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.producer: RelayProducer | None = None
        self.pid: int | None = None
        self.client: str | None = None  # the KAFKA_CLIENT it was made for


DEFAULT_PRODUCER = "default"
_slots: dict[str, _ProducerSlot] = {DEFAULT_PRODUCER: _ProducerSlot()}
_thread = threading.local()  # .producer_name: this thread's slot, when not the default
_inherited: list[Any] = []


def _slot() -> _ProducerSlot:
    """This thread's producer slot."""
    name = getattr(_thread, "producer_name", DEFAULT_PRODUCER)
    with _lock:
        slot = _slots.get(name)
        if slot is None:
            slot = _slots[name] = _ProducerSlot()
        return slot


def producer_name() -> str:
    """The name of this thread's producer (`DEFAULT_PRODUCER` unless in `producer_own`)."""
    return str(getattr(_thread, "producer_name", DEFAULT_PRODUCER))


def producer_name_set(name: str) -> None:
    """This thread uses the producer named `name` from now on: a worker thread of a relay in
    `producer_own` (the drain's sender thread) must send with that relay's producer."""
    _thread.producer_name = name


@contextmanager
def producer_own(name: str) -> Iterator[None]:
    """In this block, this thread's relay uses the producer named `name`, not the process's:
    made on first use and kept for the next block (`producer_close()` inside one closes it)."""
    previous = getattr(_thread, "producer_name", DEFAULT_PRODUCER)
    _thread.producer_name = name
    try:
        yield
    finally:
        _thread.producer_name = previous


@functools.lru_cache(maxsize=65_536)
def _key_hash(serialized_key: bytes) -> int:
    return int(murmur2(serialized_key)) & 0x7FFFFFFF


class KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner (the Java client's: murmur2 of the key, modulo the
    topic's partitions; librdkafka's `murmur2_random`), with the hash of recent keys remembered.

    kafka-python computes murmur2 in pure Python, with a sort and a list of the partitions, on
    every send: 8% of a drain's time with kafka-python (bench/relay.py's rows, 1,000 keys). An
    aggregate's events share its key, so a key's hash is asked for again and again. The bounded
    cache (least recently used out) keeps memory flat however many keys go by.
    """

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:  # no key (a random partition), or a topic unknown (ValueError)
            found: int = super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            return found
        chosen: int = sorted(partitions)[_key_hash(serialized_key) % len(partitions)]
        return chosen


def producer_config() -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        # "all" (anything else is refused at start: outbox/checks.py); kafka-python wants 0/1 as ints.
        "acks": int(settings.KAFKA_PRODUCER_ACKS)
        if settings.KAFKA_PRODUCER_ACKS in ("0", "1")
        else settings.KAFKA_PRODUCER_ACKS,
        "enable_idempotence": True,
        # Ordering per partition survives retries with idempotence and at most 5 in flight.
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": settings.OUTBOX_PRODUCER_LINGER_MS,
        "batch_size": 256 * 1024,
        # kafka-python's default, said here so that librdkafka is given the same limit.
        "max_request_size": 1024 * 1024,
        # A send that cannot even find its partition's leader gives up quickly; the row is
        # retried by a later drain with backoff instead of blocking the worker.
        "max_block_ms": 5000,
        # A producer that cannot reach any broker gives up as quickly (kafka-python waits 30 s by
        # default): a drain during an outage then records its failure well within its lease.
        "bootstrap_timeout_ms": 5000,
        "request_timeout_ms": 10000,
        "delivery_timeout_ms": 30000,
        "client_id": f"outbox-relay-{os.getpid()}",
        # Topics are made by `ensure_topics` with their partition count: a send to a missing
        # topic fails (and the row waits in backoff) instead of creating it with the broker's
        # defaults, which would move keys to other partitions once it is recreated properly.
        "allow_auto_create_topics": False,
        "partitioner": KeyHashPartitioner(),
        **settings.KAFKA_SECURITY,
    }


def producer_broken(producer: RelayProducer) -> BaseException | None:
    """Why this producer can deliver nothing any more, or None.

    kafka-python 3.x does not raise from `send()` when its idempotent producer is in a fatal
    state: the transaction manager holds FATAL_ERROR (`has_fatal_error()`, the cause in
    `last_error`) and the sender thread fails every batch with that error. A closed producer,
    or one whose I/O thread died, delivers nothing either.
    """
    if not isinstance(producer, KafkaProducer):
        return producer.broken()
    if getattr(producer, "_closed", False):
        return IllegalStateError("KafkaProducer already closed")
    sender = getattr(producer, "_sender", None)
    if sender is not None and not sender.is_alive():
        return IllegalStateError("the producer's I/O thread is not running")
    manager = getattr(producer, "_transaction_manager", None)
    if manager is not None and manager.has_fatal_error():
        return manager.last_error or IllegalStateError("the idempotent producer is in a fatal state")
    return None


def producer_topic_absent(producer: RelayProducer, topic: str, *, since: float) -> bool:
    """Whether the cluster answered this producer since `since` (time.monotonic()) without
    `topic`: the topic is missing, the cluster is not away.

    kafka-python's `send()` raises the same KafkaTimeoutError after `max_block_ms` when a topic
    is missing and when no broker answers its metadata request; only its metadata tells them
    apart (refreshed since, and still without the topic). librdkafka's `produce()` does not wait
    for metadata: a missing topic comes back in the delivery report (UnknownTopicOrPartition).
    """
    if not isinstance(producer, KafkaProducer):
        return False
    metadata = getattr(producer, "_metadata", None)
    refreshed_ms = getattr(metadata, "_last_successful_refresh_ms", None)
    if metadata is None or refreshed_ms is None:
        return False
    return bool(refreshed_ms >= since * 1000 and metadata.partitions_for_topic(topic) is None)


def producer_topic_present(producer: RelayProducer, topic: str, *, since: float) -> bool:
    """Whether the cluster has told this producer, since `since` (time.monotonic()), that it has
    `topic` (False when it cannot tell yet).

    kafka-python: the metadata its I/O thread keeps, if refreshed since (a producer that knew the
    topic before it was deleted lists it until its next refresh, every 5 minutes); otherwise a
    refresh is asked for, without waiting, and the next look reads it. A topic it was told is
    unknown is asked for again every `retry_backoff_ms` while tracked, and is tracked from here
    on. confluent-kafka: a metadata request of at most a second.
    """
    if not isinstance(producer, KafkaProducer):
        return producer.topic_present(topic, timeout_s=1.0)
    metadata = producer._metadata  # type: ignore[attr-defined]  # no public API without a wait
    sender = producer._sender  # type: ignore[attr-defined]
    if metadata._last_successful_refresh_ms >= since * 1000:
        if metadata.partitions_for_topic(topic) is not None:
            return True
        if topic in metadata._topics:
            return False
        sender.add_topic(topic)
    else:
        metadata.request_update()
    sender.wakeup()
    return False


ClientT = TypeVar("ClientT", KafkaProducer, KafkaConsumer)


def topic_auto_create_off(client: ClientT) -> ClientT:
    """The client, made unable to create a topic by asking for its metadata.

    kafka-python 3.0.12 does not pass `allow_auto_create_topics` on to the metadata requests it
    builds (ClusterMetadata is made without it, so every topic looked up is created with the
    broker's defaults, and a topic an operator deletes to recreate comes back at once): set it
    where the requests are built. Topics are made by `ensure_topics`, with their partitions,
    replication and min ISR.
    """
    metadata = getattr(client, "_metadata", None)  # KafkaProducer
    if metadata is None:
        metadata = getattr(client, "_cluster", None)  # KafkaConsumer
    if metadata is None or not hasattr(metadata, "config"):
        # A later kafka-python may build its metadata from the client's own setting (which
        # every client here passes); the test of this guard says whether it still holds.
        logger.warning("kafka client without the expected cluster metadata", extra={"client": type(client).__name__})
        return client
    metadata.config["allow_auto_create_topics"] = False
    return client


def producer_new() -> RelayProducer:
    """A new producer of the configured client (`KAFKA_CLIENT`), with `producer_config()`."""
    if settings.KAFKA_CLIENT == "confluent":
        from outbox.kafka_confluent import ConfluentProducer

        return ConfluentProducer(producer_config())
    return topic_auto_create_off(KafkaProducer(**producer_config()))


def producer_get() -> RelayProducer:
    """The process's producer; a new one when there is none, after a fork, or when the old one
    is broken (see `producer_broken`): the worker recovers without a restart."""
    slot = _slot()
    with slot.lock:
        if slot.producer is not None and slot.pid == os.getpid():
            broken = producer_broken(slot.producer)
            if broken is None and slot.client != settings.KAFKA_CLIENT:
                broken = IllegalStateError(f"KAFKA_CLIENT is now {settings.KAFKA_CLIENT}")
            if broken is not None:
                logger.warning("kafka producer replaced", extra={"error": repr(broken)})
                _drop(slot.producer)
                slot.producer = None
        if slot.producer is not None and slot.pid != os.getpid():
            # A forked child's copy of its parent's producer: its threads did not survive the
            # fork, and freeing it (librdkafka's destroy joins them) could hang the child. Kept.
            _inherited.append(slot.producer)
        if slot.producer is None or slot.pid != os.getpid():
            slot.producer = producer_new()
            slot.pid = os.getpid()
            slot.client = settings.KAFKA_CLIENT
            logger.info("kafka producer created", extra={"pid": slot.pid, "client": settings.KAFKA_CLIENT})
        return slot.producer


def producer_warm() -> None:
    """Make this thread's producer and read the configured topics' metadata now, so that the
    first record after a relay starts does not wait for either (a fresh kafka-python producer
    took 100-250 ms to send its first record to a topic). A broker that does not answer is
    logged: the first drain tries again."""
    try:
        producer = producer_get()
        for topic in sorted(set(settings.KAFKA_TOPICS.values())):
            producer.partitions_for(topic)
    except Exception as exc:  # noqa: BLE001 - a warm-up only
        logger.warning("kafka producer not warmed up", extra={"error": repr(exc)})


def producer_made() -> bool:
    """Whether this thread's producer exists in this process (made, not yet closed)."""
    slot = _slot()
    with slot.lock:
        return slot.producer is not None and slot.pid == os.getpid()


def producer_close(timeout_s: float = 10.0) -> None:
    """Close this thread's producer (the process's, unless in `producer_own`)."""
    slot = _slot()
    with slot.lock:
        producer = _slot_empty(slot)
    _close(producer, timeout_s)


def _slot_empty(slot: _ProducerSlot) -> RelayProducer | None:
    """Take the slot's producer out (under `slot.lock`): closed outside the lock, which a close
    of up to its timeout would otherwise hold from the relay's `producer_get`."""
    producer = slot.producer if slot.pid == os.getpid() else None
    slot.producer = None
    slot.pid = None
    return producer


def _close(producer: RelayProducer | None, timeout_s: float) -> None:
    if producer is None:
        return
    try:
        if timeout_s <= 0:
            _drop(producer)
        else:
            producer.close(timeout=timeout_s)
    except Exception:
        logger.exception("kafka producer close failed")


def _drop(producer: RelayProducer) -> None:
    """Close `producer` at once: what it still holds fails, and none of it is sent any more.

    kafka-python's `close(0)` flushes first, and raises on the first record not yet acknowledged
    before it closes anything: the producer would go on sending all it held, rows the relay
    releases (to send again, after the failed row of their key). Its I/O thread is force-closed
    first, which fails every batch it holds; a request already on the wire may still land, once.
    (The librdkafka producer's close(0) purges its queues, outbox/kafka_confluent.py.)"""
    if isinstance(producer, KafkaProducer):
        sender = getattr(producer, "_sender", None)
        if sender is not None and sender.is_alive() and sender is not threading.current_thread():
            sender.force_close()
            sender.join(DROP_JOIN_S)
    producer.close(timeout=0)


def producer_reset() -> None:
    """Drop a producer after a fatal error; the next drain makes a new one."""
    producer_close(timeout_s=0)


@atexit.register
def _producers_close() -> None:
    with _lock:
        slots = list(_slots.values())
    producers = []
    for slot in slots:
        with slot.lock:
            producers.append(_slot_empty(slot))
    for producer in producers:
        _close(producer, 10.0)


def admin_client(*, timeout_s: float | None = None) -> KafkaAdminClient:
    """The admin client; `timeout_s` bounds its bootstrap and each request (kafka-python's
    defaults: 30 s to bootstrap, the 10 s request timeout set here), for a status page."""
    if timeout_s is None:
        return KafkaAdminClient(
            bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=10000, **settings.KAFKA_SECURITY
        )
    return KafkaAdminClient(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **settings.KAFKA_SECURITY,
    )
