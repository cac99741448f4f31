"""The drain loses its database session (a PostgreSQL restart, a failover, a terminated backend)
while it holds batches: what it holds is still written back, on a new session, within the lease.

Left leased, a held batch's keys would wait the whole lease (OUTBOX_CLAIM_TTL), then each of its
rows be taken over as abandoned: charged an attempt, sent alone, and sent twice. Real PostgreSQL
and a real broker; the session is ended with pg_terminate_backend, as a restart ends it."""

from __future__ import annotations

import importlib

import psycopg
import pytest
from django.db import DatabaseError, connection
from kafka.errors import KafkaTimeoutError

from outbox.kafka import producer_reset
from outbox.models import OutboxEvent
from outbox.relay import drain, relay_drain
from outbox.relay.claim import claim_batch
from outbox.relay.rows import DrainResult
from outbox.relay.send import acknowledged
from outbox.relay.write_back import write_back
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.kafka import kafka_read_all

# The module, not the function the package exports under its name.
write_back_module = importlib.import_module("outbox.relay.write_back")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.relay_clients,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def _fresh_producer():
    producer_reset()
    yield
    producer_reset()


def _terminate_this_session() -> None:
    """End the Django connection's backend from another session, as a restart of PostgreSQL does."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        user=settings_dict["USER"],
        password=settings_dict["PASSWORD"],
        dbname=settings_dict["NAME"],
        autocommit=True,
    ) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


def _drain_to_the_end(**kwargs) -> tuple[DrainResult | None, BaseException | None]:
    try:
        return relay_drain(**kwargs), None
    except DatabaseError as exc:
        connection.close()  # as the relay loop does, so that the test's own queries reconnect
        return None, exc


def _rows_left_leased() -> list[int]:
    return list(
        OutboxEvent.objects.filter(status="pending", claim_token__isnull=False)
        .order_by("seq")
        .values_list("seq", flat=True)
    )


def test_a_session_lost_at_a_write_back_still_writes_every_held_batch_back(kafka_topics, monkeypatch):
    # given a backlog of 120 rows of 12 keys, drained in batches of 40, and the drain's session
    # ended just before its first write-back (one batch acknowledged, the next one in flight)
    topic = kafka_topics["catalog-events"]
    rows = outbox_rows_bulk(topic=topic, keys=12, per_key=10)
    terminated: list[int] = []

    def write_back_on_a_lost_session(**kwargs):
        if not terminated:
            terminated.append(len(kwargs["rows"]))
            _terminate_this_session()
        return write_back(**kwargs)

    monkeypatch.setattr(drain, "_write_back", write_back_on_a_lost_session)
    # when the drain runs
    result, error = _drain_to_the_end(batch_size=40)
    # then no row is left leased, every row is published once, and no attempt was charged
    assert terminated == [40]
    assert _rows_left_leased() == [], f"left leased after {error!r}"
    assert error is None, error
    assert result is not None
    assert result.published == len(rows)
    assert OutboxEvent.objects.filter(status="published").count() == len(rows)
    assert not OutboxEvent.objects.filter(attempts__gt=0).exists()
    assert len(kafka_read_all(topic)) == len(rows)


def test_a_session_lost_at_a_claim_still_writes_the_batch_in_flight_back(kafka_topics, monkeypatch):
    # given the backlog above, and the drain's session ended just before its second claim (the
    # first batch handed to the producer, not yet written back)
    topic = kafka_topics["catalog-events"]
    rows = outbox_rows_bulk(topic=topic, keys=12, per_key=10)
    claims: list[object] = []

    def claim_on_a_lost_session(**kwargs):
        claims.append(kwargs["token"])
        if len(claims) == 2:
            _terminate_this_session()
        return claim_batch(**kwargs)

    monkeypatch.setattr(drain, "claim_batch", claim_on_a_lost_session)
    # when the drain runs
    result, error = _drain_to_the_end(batch_size=40)
    # then the drain stops claiming and says why, and the batch it held is published, not leased
    assert error is None, error
    assert result is not None
    assert result.published == 40
    assert any("terminating connection" in message for message in result.errors), result.errors
    assert _rows_left_leased() == []
    assert OutboxEvent.objects.filter(status="published").count() == 40
    # and a next drain publishes the rest, each row once
    assert relay_drain(batch_size=40).published == len(rows) - 40
    assert not OutboxEvent.objects.filter(attempts__gt=0).exists()
    assert len(kafka_read_all(topic)) == len(rows)


def test_a_claim_that_committed_on_a_session_lost_before_its_reply_is_released(kafka_topics, monkeypatch):
    # given the backlog above, and a second claim whose lease commits, then its session is lost
    # before the drain reads the rows it leased
    topic = kafka_topics["catalog-events"]
    rows = outbox_rows_bulk(topic=topic, keys=12, per_key=10)
    unseen: list[int] = []

    def claim_whose_reply_is_lost(**kwargs):
        claimed = claim_batch(**kwargs)
        if unseen or not kwargs.get("in_flight"):
            return claimed
        unseen.extend(row.seq for row in claimed)
        _terminate_this_session()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")  # the error the lost reply would have raised
        raise AssertionError("the terminated session answered")

    monkeypatch.setattr(drain, "claim_batch", claim_whose_reply_is_lost)
    # when the drain runs
    _, error = _drain_to_the_end(batch_size=40)
    # then the rows of the lost claim are not left leased (nor charged, nor sent) ...
    assert error is None, error
    assert len(unseen) == 40
    assert _rows_left_leased() == []
    assert OutboxEvent.objects.filter(seq__in=unseen, status="pending").count() == 40
    # ... and a next drain publishes them with the rest, each row once, none as abandoned
    assert relay_drain(batch_size=40).published == len(rows) - 40
    assert not OutboxEvent.objects.filter(attempts__gt=0).exists()
    assert len(kafka_read_all(topic)) == len(rows)


def test_a_write_back_whose_commit_went_through_before_the_session_was_lost_is_not_fenced_out(
    kafka_topics, monkeypatch
):
    # given a batch whose marking UPDATE commits, then the session is lost before its reply
    topic = kafka_topics["catalog-events"]
    rows = outbox_rows_bulk(topic=topic, keys=4, per_key=10)
    lost: list[int] = []
    mark_published = write_back_module._mark_published

    def mark_then_lose_the_session(**kwargs):
        marked = mark_published(**kwargs)
        if not lost:
            lost.append(marked)
            _terminate_this_session()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        return marked

    monkeypatch.setattr(write_back_module, "_mark_published", mark_then_lose_the_session)
    # when the drain runs
    result, error = _drain_to_the_end(batch_size=40)
    # then the batch counts as written back by this drain, not as taken over by another
    assert error is None, error
    assert result is not None
    assert lost == [40]
    assert (result.published, result.fenced_out) == (40, 0)
    assert OutboxEvent.objects.filter(status="published").count() == len(rows)


def test_a_session_lost_at_the_write_back_of_a_failed_row_charges_it_once(kafka_topics, monkeypatch):
    # given a batch in which the broker failed one row (retriable), and the session lost just
    # before its write-back (a transaction: the failure, its backoff from the database's clock)
    topic = kafka_topics["catalog-events"]
    rows = outbox_rows_bulk(topic=topic, keys=40, per_key=1)
    failing = rows[7]
    terminated: list[bool] = []

    def one_row_failed(sent, **kwargs):
        outcomes, aborted = acknowledged(sent, **kwargs)
        if failing.seq in outcomes:
            outcomes[failing.seq] = KafkaTimeoutError("not acknowledged (test)")
        return outcomes, aborted

    def write_back_on_a_lost_session(**kwargs):
        if not terminated:
            terminated.append(True)
            _terminate_this_session()
        return write_back(**kwargs)

    monkeypatch.setattr(drain, "_acknowledged", one_row_failed)
    monkeypatch.setattr(drain, "_write_back", write_back_on_a_lost_session)
    # when the drain runs
    result, error = _drain_to_the_end(batch_size=40)
    # then the failed row is charged one attempt and backs off; the others are published
    assert error is None, error
    assert result is not None
    assert (result.published, result.failed) == (39, 1)
    failed = OutboxEvent.objects.get(seq=failing.seq)
    assert (failed.status, failed.attempts, failed.claim_token) == ("pending", 1, None)
    assert "not acknowledged (test)" in failed.last_error
    assert _rows_left_leased() == []
    assert OutboxEvent.objects.filter(status="published").count() == 39
