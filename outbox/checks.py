"""Settings checked at start (`manage.py check`, every management command, the Celery worker):
a combination the relay cannot honour fails with one clear line instead of at the first drain."""

from __future__ import annotations

import importlib.util
import sys

from django.conf import settings
from django.core import checks

from outbox.kafka import KAFKA_CLIENTS, producer_config


def _bootstrap_errors(servers: str | list[str]) -> list[str]:
    if isinstance(servers, str):
        servers = servers.split(",")
    if not servers:
        return ["KAFKA_BOOTSTRAP_SERVERS is empty: give host:port[,host:port...]"]
    errors = []
    for server in servers:
        host, _, port = str(server).strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            errors.append(f"KAFKA_BOOTSTRAP_SERVERS entry {server!r} is not host:port (e.g. kafka-1.internal:9092)")
    return errors


def outbox_settings_errors() -> list[checks.Error]:
    """Every impossible combination of the outbox's settings, as Django check errors."""
    errors: list[checks.Error] = []

    def error(code: int, message: str, hint: str) -> None:
        errors.append(checks.Error(message, hint=hint, id=f"outbox.E{code:03d}"))

    if settings.OUTBOX_BATCH_SIZE < 1:
        error(
            1,
            f"OUTBOX_BATCH_SIZE is {settings.OUTBOX_BATCH_SIZE}: the relay would claim nothing",
            "set OUTBOX_BATCH_SIZE to 1 or more (default 500)",
        )
    if settings.OUTBOX_BACKOFF_BASE <= 0 or settings.OUTBOX_BACKOFF_BASE > settings.OUTBOX_BACKOFF_MAX:
        error(
            2,
            f"OUTBOX_BACKOFF_BASE ({settings.OUTBOX_BACKOFF_BASE} s) must be above 0 and at most "
            f"OUTBOX_BACKOFF_MAX ({settings.OUTBOX_BACKOFF_MAX} s)",
            "e.g. OUTBOX_BACKOFF_BASE=0.5 OUTBOX_BACKOFF_MAX=60",
        )
    config = producer_config()
    max_block_s = config["max_block_ms"] / 1000
    # A batch sends and waits for its acks for half its lease, and one refused send may block
    # max_block_ms past that: the whole must fit in the lease, or another relay takes the keys
    # over while this one still sends them.
    lease_s = settings.OUTBOX_CLAIM_TTL
    if lease_s < 2 * max_block_s:
        error(
            3,
            f"OUTBOX_CLAIM_TTL ({lease_s} s) is shorter than the time a batch may "
            f"take to send (half the lease plus one blocked send of max_block_ms={max_block_s:g} s)",
            f"set OUTBOX_CLAIM_TTL to {2 * max_block_s:g} s or more (default 60)",
        )
    for message in _bootstrap_errors(settings.KAFKA_BOOTSTRAP_SERVERS):
        error(4, message, "KAFKA_BOOTSTRAP_SERVERS=host:port[,host:port...]")
    if config.get("enable_idempotence") and str(config.get("acks")) not in ("all", "-1"):
        error(
            5,
            f"KAFKA_PRODUCER_ACKS is {config.get('acks')!r} with the idempotent producer: "
            "idempotence (per-partition order across retries) needs acks=all",
            "set KAFKA_PRODUCER_ACKS=all",
        )
    if settings.OUTBOX_MAX_ATTEMPTS < 1:
        error(
            6,
            f"OUTBOX_MAX_ATTEMPTS is {settings.OUTBOX_MAX_ATTEMPTS}: no row could ever be sent",
            "set OUTBOX_MAX_ATTEMPTS to 1 or more (default 12)",
        )
    if settings.OUTBOX_WAKEUP.strip().lower() not in ("auto", "notify", "celery"):
        error(
            7,
            f"OUTBOX_WAKEUP is {settings.OUTBOX_WAKEUP!r}: the relay's wake-up is unknown",
            "set OUTBOX_WAKEUP to auto (default), notify or celery",
        )
    if settings.KAFKA_CLIENT not in KAFKA_CLIENTS:
        error(
            8,
            f"KAFKA_CLIENT is {settings.KAFKA_CLIENT!r}: the relay's Kafka client is unknown",
            "set KAFKA_CLIENT to kafka-python (default) or confluent",
        )
    elif settings.KAFKA_CLIENT == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
        error(
            9,
            "KAFKA_CLIENT is 'confluent' but confluent-kafka is not installed",
            "pip install confluent-kafka (requirements-confluent.txt), or set KAFKA_CLIENT=kafka-python",
        )
    if settings.OUTBOX_LOOP_POLL_INTERVAL <= 0:
        error(
            10,
            f"OUTBOX_LOOP_POLL_INTERVAL is {settings.OUTBOX_LOOP_POLL_INTERVAL} s: the relay loop "
            "would claim without pause",
            "set OUTBOX_LOOP_POLL_INTERVAL above 0 (default 1)",
        )
    return errors


@checks.register("outbox")
def outbox_settings_check(app_configs: object = None, **kwargs: object) -> list[checks.Error]:
    return outbox_settings_errors()


def outbox_settings_ensure_valid() -> None:
    """For processes that Django's checks do not reach (the Celery worker): exit with one line
    per impossible setting."""
    errors = outbox_settings_errors()
    if errors:
        for found in errors:
            sys.stderr.write(f"outbox settings: ({found.id}) {found.msg}; {found.hint}\n")
        sys.stderr.flush()
        raise SystemExit(2)
