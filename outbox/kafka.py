"""The Kafka clients of the outbox: one long-lived producer per process, and the admin client.

The producer is created lazily in the process that uses it (after a Celery worker forked, never
before: a producer's sockets and threads do not survive a fork) and closed when it exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from django.conf import settings
from kafka import KafkaAdminClient, KafkaProducer

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_producer: KafkaProducer | None = None
_producer_pid: int | None = None


def producer_config() -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "acks": "all",
        "enable_idempotence": True,
        # Ordering per partition survives retries with idempotence and at most 5 in flight.
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        # A send that cannot even find its partition's leader gives up quickly; the row is
        # retried by a later drain with backoff instead of blocking the worker.
        "max_block_ms": 5000,
        "request_timeout_ms": 10000,
        "delivery_timeout_ms": 30000,
        "client_id": f"outbox-relay-{os.getpid()}",
        **settings.KAFKA_SECURITY,
    }


def producer_get() -> KafkaProducer:
    global _producer, _producer_pid
    with _lock:
        if _producer is None or _producer_pid != os.getpid():
            _producer = KafkaProducer(**producer_config())
            _producer_pid = os.getpid()
            logger.info("kafka producer created", extra={"pid": _producer_pid})
        return _producer


def producer_close(timeout_s: float = 10.0) -> None:
    global _producer, _producer_pid
    with _lock:
        if _producer is not None and _producer_pid == os.getpid():
            try:
                _producer.close(timeout=timeout_s)
            except Exception:  # noqa: BLE001 - closing on shutdown must not raise
                logger.exception("kafka producer close failed")
        _producer = None
        _producer_pid = None


def producer_reset() -> None:
    """Drop a producer after a fatal error; the next drain makes a new one."""
    producer_close(timeout_s=0)


atexit.register(producer_close)


def admin_client() -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                            request_timeout_ms=10000, **settings.KAFKA_SECURITY)
