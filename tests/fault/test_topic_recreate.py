"""The topic_recreate fault's recovery: what the old topic took with it is requeued, including
sends it acknowledged that a relay writes back only after the topic is back."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from outbox.models import OutboxEvent
from tests.fault.faults import topic_recreate
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = [pytest.mark.integration, pytest.mark.relay_clients, pytest.mark.django_db(transaction=True)]


def _topic_id(admin: KafkaAdminClient, topic: str) -> str | None:
    """The topic's id (a new one when it is created again), or None while it does not exist."""
    try:
        (described,) = admin.describe_topics([topic])
    except KafkaError:
        return None
    return described["topic_id"] if described["error_code"] == 0 else None


def _when_recreated(topic: str, then) -> threading.Thread:
    """Run `then` as soon as the topic exists again with a new id (deleted and created again).

    By its id, not by watching its name leave and come back: a deletion and re-creation quicker
    than one poll left the watcher waiting forever for a deletion it had missed (and the test
    process, at exit, waiting for the watcher)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS)
    old_id = _topic_id(admin, topic)
    assert old_id is not None, f"{topic} does not exist"

    def watch() -> None:
        deadline = time.monotonic() + 60
        try:
            while _topic_id(admin, topic) in (old_id, None):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
        finally:
            admin.close()
        then()
        connection.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_send_written_back_after_the_topic_is_recreated_is_requeued(kafka_topics, settings):
    # given a published row the back office never applied, and a row a relay still holds: its
    # send was acknowledged by the old topic, its write-back comes after the topic is back
    topic = kafka_topics["catalog-events"]
    settings.OUTBOX_CLAIM_TTL = 8
    published, in_flight = outbox_rows_bulk(topic=topic, keys=2, per_key=1)
    OutboxEvent.objects.filter(seq=published.seq).update(
        status=OutboxEvent.Status.PUBLISHED, kafka_partition=0, kafka_offset=0
    )
    token = uuid.uuid4()
    OutboxEvent.objects.filter(seq=in_flight.seq).update(
        claim_token=token, claim_expires_at=timezone.now() + timedelta(seconds=8)
    )

    written_back: list[int] = []

    def relay_writes_back() -> None:
        written_back.append(1)
        OutboxEvent.objects.filter(seq=in_flight.seq, claim_token=token).update(
            status=OutboxEvent.Status.PUBLISHED,
            published_at=timezone.now(),
            kafka_partition=0,
            kafka_offset=1,
            claim_token=None,
            claim_expires_at=None,
        )

    relay = _when_recreated(topic, relay_writes_back)
    # when the topic is deleted and created again, and its recovery requeues what it lost
    topic_recreate(bootstrap=",".join(settings.KAFKA_BOOTSTRAP_SERVERS), topic=topic, group="g")
    relay.join(timeout=60)
    assert written_back, "the topic was not seen created again: the relay's write-back never ran"
    # then both rows are pending again: both records went with the old topic
    statuses = dict(OutboxEvent.objects.values_list("seq", "status"))
    assert statuses == {published.seq: "pending", in_flight.seq: "pending"}
