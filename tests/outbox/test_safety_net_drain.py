"""Beside a relay loop, the Celery beat drain is the safety net: it takes only rows due for
OUTBOX_SAFETY_NET_AGE seconds, what just committed is the loop's."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from outbox.models import OutboxEvent
from outbox.relay import claim_batch
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = pytest.mark.django_db


def _age(key: str, seconds: float) -> None:
    OutboxEvent.objects.filter(key=key).update(available_at=timezone.now() - timedelta(seconds=seconds))


def test_a_claim_with_a_minimum_age_takes_only_rows_due_that_long_and_keeps_key_order():
    # given key 1 due for a minute, key 2 just committed, and key 3 with an old row behind a fresh one
    outbox_rows_bulk(topic="t", keys=3, per_key=2)
    _age("1", 60)
    _age("3", 60)
    fresh = OutboxEvent.objects.filter(key="3").earliest("seq")
    OutboxEvent.objects.filter(seq=fresh.seq).update(available_at=timezone.now())
    # when a claim asks for rows due for at least 5 s
    claimed = claim_batch(token=uuid.uuid4(), limit=100, min_age_s=5.0)
    # then it takes key 1's rows only: key 2 is fresh, key 3's later row waits behind its fresh one
    assert sorted((row.key, row.payload["sequence"]) for row in claimed) == [("1", 0), ("1", 1)]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_beat_drain_beside_a_relay_loop_leaves_fresh_rows_and_sends_old_ones(kafka_topics, settings):
    from outbox.tasks import relay_drain_task

    if connection.vendor != "postgresql":
        pytest.fail("the relay loop (NOTIFY) is PostgreSQL's: run with DATABASE_URL=postgres://...")
    settings.OUTBOX_WAKEUP = "notify"
    settings.OUTBOX_SAFETY_NET_AGE = 5.0
    # given rows just committed on one key and rows a loop never sent on another
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=2, per_key=3)
    _age("2", 30)
    # when the beat's drain runs
    result = relay_drain_task(safety_net=True)
    # then it sends the old rows only
    assert result["published"] == 3
    assert set(OutboxEvent.objects.filter(status="pending").values_list("key", flat=True)) == {"1"}
    # and a drain that is not the beat's (a kick, an operator's) takes the fresh ones as well
    assert relay_drain_task()["published"] == 3
    assert not OutboxEvent.objects.filter(status="pending").exists()
