"""On PostgreSQL the claims read the time from the database, not from the relay's host: a relay
whose clock runs ahead does not take over another relay's live lease (sending its rows twice,
and charging them an attempt they did not fail), and one whose clock runs behind does not leave
due rows waiting; a row recorded on a host whose clock runs ahead is due from the database's
clock too. (SQLite: one host, one drain at a time; it keeps the host's clock.)"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.utils import timezone
from kafka.errors import KafkaTimeoutError

from outbox.housekeeping import outbox_requeue
from outbox.models import OutboxEvent
from outbox.recording import outbox_record
from outbox.relay import DrainResult, claim_batch, write_back
from outbox.relay.claim import claim_quick
from tests.outbox.events_for_tests import SequenceRecorded, outbox_rows_bulk

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SKEW = timedelta(minutes=2)  # past the lease (OUTBOX_CLAIM_TTL, 60 s)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.fail("the database's clock is PostgreSQL's: run with DATABASE_URL=postgres://...")


def _relay_clock_off_by(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + offset)


def test_a_relay_whose_clock_runs_ahead_does_not_take_over_a_live_lease(monkeypatch):
    # given rows leased by a relay with a true clock, a minute from their expiry
    outbox_rows_bulk(topic="t", keys=2, per_key=2)
    assert len(claim_batch(token=uuid.uuid4(), limit=10)) == 4
    # when a relay whose clock is two minutes ahead claims
    _relay_clock_off_by(monkeypatch, SKEW)
    taken = claim_batch(token=uuid.uuid4(), limit=10)
    # then it takes nothing, and counts no abandoned attempt
    assert taken == []
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {0}


@pytest.mark.parametrize("claim", [claim_batch, claim_quick], ids=["full claim", "quick claim"])
def test_a_relay_whose_clock_runs_behind_claims_what_is_due(monkeypatch, claim):
    # given rows recorded and due now
    outbox_rows_bulk(topic="t", keys=2, per_key=2)
    # when a relay whose clock is two minutes behind claims
    _relay_clock_off_by(monkeypatch, -SKEW)
    taken = claim(token=uuid.uuid4(), limit=10)
    # then it takes them, under a lease that lasts OUTBOX_CLAIM_TTL from the database's now
    assert len(taken) == 4
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(claim_expires_at - statement_timestamp()) FROM outbox_outboxevent")
        (left,) = cursor.fetchone()
    assert timedelta(seconds=50) < left <= timedelta(seconds=60)


@pytest.mark.parametrize("claim", [claim_batch, claim_quick], ids=["full claim", "quick claim"])
def test_a_row_recorded_on_a_host_whose_clock_runs_ahead_is_due_at_once(monkeypatch, claim):
    # given an event recorded on an application host whose clock is two minutes ahead
    _relay_clock_off_by(monkeypatch, SKEW)
    with transaction.atomic():
        outbox_record(event=SequenceRecorded(product_id="1", sequence=0))
    monkeypatch.undo()
    # when a relay with a true clock claims at once
    taken = claim(token=uuid.uuid4(), limit=10)
    # then the row is due: it keeps the host's occurred_at (the event's time), and is due from
    # the database's clock
    assert len(taken) == 1
    row = OutboxEvent.objects.get()
    assert row.occurred_at > timezone.now() + SKEW / 2
    assert row.available_at <= timezone.now()


def test_a_failed_row_backs_off_from_the_database_clock(monkeypatch):
    # given a row claimed by a relay whose clock is two minutes behind
    monkeypatch.setattr(django_settings, "OUTBOX_BACKOFF_BASE", 0.5)
    monkeypatch.setattr(django_settings, "OUTBOX_BACKOFF_MAX", 0.5)
    outbox_rows_bulk(topic="t", keys=1, per_key=1)
    _relay_clock_off_by(monkeypatch, -SKEW)
    token = uuid.uuid4()
    (row,) = claim_batch(token=token, limit=10)
    # when its send fails
    write_back(token=token, rows=[row], outcomes={row.seq: KafkaTimeoutError("x")}, result=DrainResult())
    # then it waits its backoff from the database's now, not from two minutes ago
    with connection.cursor() as cursor:
        cursor.execute("SELECT available_at - statement_timestamp() FROM outbox_outboxevent")
        (wait,) = cursor.fetchone()
    assert timedelta(seconds=0) < wait <= timedelta(seconds=0.5)


def test_a_row_requeued_by_a_host_whose_clock_runs_ahead_is_due_at_once(monkeypatch):
    # given a dead row requeued from a host whose clock is two minutes ahead
    outbox_rows_bulk(topic="t", keys=1, per_key=1)
    OutboxEvent.objects.update(status="dead", attempts=12)
    _relay_clock_off_by(monkeypatch, SKEW)
    assert outbox_requeue() == 1
    monkeypatch.undo()
    # then a relay with a true clock takes it at once
    assert len(claim_batch(token=uuid.uuid4(), limit=10)) == 1
