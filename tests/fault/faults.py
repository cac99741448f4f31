"""The fault campaign's injectors that reach past killing a process: the database server
restarted, a hot key held in backoff under a deep backlog, a topic deleted and recreated,
hostile records written straight onto the topics. Each says what it did, for the report.
"""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta
from urllib.parse import urlsplit

from django.db import connection, transaction
from django.utils import timezone
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

# --- PostgreSQL --------------------------------------------------------------------------------


def postgres_cluster_for(database_url: str) -> tuple[str, str]:
    """The Debian cluster (version, name) that serves DATABASE_URL's port on this machine."""
    parts = urlsplit(database_url)
    if not parts.scheme.startswith("postgres"):
        raise ValueError(f"not a PostgreSQL URL: {parts.scheme}")
    if parts.hostname not in (None, "", "localhost", "127.0.0.1", "::1"):
        raise ValueError(f"PostgreSQL at {parts.hostname} is not on this machine: cannot restart it")
    port = str(parts.port or 5432)
    listing = subprocess.run(["pg_lsclusters", "-h"], check=True, capture_output=True, text=True, timeout=30).stdout
    for line in listing.splitlines():
        version, name, cluster_port, *_ = line.split()
        if cluster_port == port:
            return version, name
    raise ValueError(f"no PostgreSQL cluster listens on port {port}:\n{listing}")


def postgres_restart(database_url: str) -> str:
    """Restart the server of DATABASE_URL (never another cluster of the machine)."""
    version, name = postgres_cluster_for(database_url)
    subprocess.run(["pg_ctlcluster", version, name, "restart"], check=True, timeout=120)
    connection.close()  # the controller's own connection died with the server
    return f"cluster {version}/{name}"


# --- the outbox: a hot key held in backoff -----------------------------------------------------


def hot_key_backlog(*, product_id: int, events: int, hold_s: float) -> str:
    """One product gets a deep backlog of real view events whose first row sits in backoff.

    The views are recorded through the domain service (so the source table counts them), in one
    transaction whose first outbox row is put in backoff for `hold_s` before it commits, as if
    its first send had hit a transient error. Every later row of the key must wait for it (per-key
    order); the other keys must not. A relay whose claim stalls on it only delays the run.
    """
    from catalog.services import product_view_record
    from outbox.models import OutboxEvent
    from outbox.recording import outbox_atomic

    with transaction.atomic():
        newest = OutboxEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
        with outbox_atomic():
            for _ in range(events):
                product_view_record(user=None, product_id=product_id)
        first = (
            OutboxEvent.objects.filter(seq__gt=newest, key=str(product_id))
            .order_by("seq")
            .values_list("seq", flat=True)
            .first()
        )
        if first is None:  # the events were recorded just above, in this transaction
            raise RuntimeError("hot key backlog: no event recorded")
        OutboxEvent.objects.filter(seq=first).update(
            available_at=timezone.now() + timedelta(seconds=hold_s),
            attempts=1,
            last_error="fault campaign: held in backoff (hot key)",
        )
    connection.close()
    return f"product {product_id}: {events} views behind a row held {hold_s:.0f} s"


# --- Kafka: a topic deleted and recreated ------------------------------------------------------


def topic_recreate(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    partitions: int = 3,
    replication_factor: int = 1,
    claim_ttl_s: float | None = None,
) -> str:
    """Delete a topic under traffic and create it again, then republish what was lost with it.

    Deleting a topic deletes its records: those the back office had not applied yet exist only in
    the outbox now. After the topic is back, the published rows of that topic whose event id is
    not in the group's inbox are requeued (an operator's recovery, `outbox requeue` by query);
    the inbox absorbs any that were applied meanwhile.
    """
    from backoffice.models import InboxEntry
    from outbox.models import OutboxEvent

    # On a cluster the topic comes back as it was made: replicated, min ISR 2, no unclean election.
    configs = {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"} if replication_factor >= 3 else {}
    from django.conf import settings

    claim_ttl_s = settings.OUTBOX_CLAIM_TTL if claim_ttl_s is None else claim_ttl_s
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    deleting_at = timezone.now()
    try:
        admin.delete_topics([topic], timeout_ms=30000)
        deadline = time.monotonic() + 60
        while topic in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        while True:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            num_partitions=partitions,
                            replication_factor=replication_factor,
                            topic_configs=configs,
                        )
                    ],
                    timeout_ms=30000,
                )
                break
            except TopicAlreadyExistsError:
                break  # a producer's metadata request auto-created it meanwhile
            except (UnknownTopicOrPartitionError, KafkaError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the deletion is still in progress
    finally:
        admin.close()
    # A send the old topic acknowledged just before the deletion is written back as published
    # later, by the relay still holding its claim: requeueing now would miss it, and its record
    # went with the old topic (make chaos KAFKA_BROKERS=3 lost 52 events so). Wait until every
    # claim taken before the deletion is written back, released or expired (an expired one is
    # sent again anyway).
    in_flight = OutboxEvent.objects.filter(
        topic=topic, claim_token__isnull=False, claim_expires_at__lte=deleting_at + timedelta(seconds=claim_ttl_s)
    )
    deadline = time.monotonic() + claim_ttl_s + 1
    while in_flight.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    applied = InboxEntry.objects.filter(consumer_group=group, topic=topic).values("event_id")
    requeued = (
        OutboxEvent.objects.filter(topic=topic, status=OutboxEvent.Status.PUBLISHED)
        .exclude(event_id__in=applied)
        .update(status=OutboxEvent.Status.PENDING, available_at=timezone.now(), claim_token=None, claim_expires_at=None)
    )
    connection.close()
    return f"{topic}: recreated, {requeued} unapplied events requeued"


# --- hostile records written onto the topics ---------------------------------------------------


def poison_records_inject(*, bootstrap: str, topics: dict[str, str]) -> int:
    """Records a broken or hostile producer could write: out-of-range values, malformed JSON,
    missing headers, unknown types. Each must become one dead letter and block nothing. Returns
    how many were written."""
    from tests.backoffice.stream import Record, like, order_event, stock

    sample = like("1", True)
    confirmed = order_event("OrderConfirmed", "1", [("1", 1, "1.00")])
    records = [
        order_event("OrderConfirmed", "990001", [("1", 10**30, "0.00")]),  # quantity past integer
        stock("1", 5, 2**70),  # version past integer
        like("12345678901234567890", True),  # id past bigint
        order_event("OrderConfirmed", "990002", [("1", 1, "12345678901234.00")]),  # past numeric(14,2)
        Record("catalog-events", b"1", b"{broken json", sample.headers),
        Record("catalog-events", b"1", sample.value, [h for h in sample.headers if h[0] != "event_id"]),
        Record(
            "catalog-events",
            b"1",
            sample.value,
            [(n, b"Unheard" if n == "event_type" else v) for n, v in sample.headers],
        ),
        Record("order-events", b"1", confirmed.value, [h for h in confirmed.headers if h[0] != "aggregate_version"]),
        Record("catalog-events", b"1", sample.value.replace(b'"1"', b'"1\\u0000"', 1), sample.headers),
    ]
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all")
    try:
        for item in records:
            producer.send(topics[item.topic_stream], key=item.key, value=item.value, headers=item.headers)
        producer.flush(timeout=30)
    finally:
        producer.close()
    return len(records)
