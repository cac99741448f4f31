"""The relay loop (`manage.py relay_loop`): woken by the recording transaction's NOTIFY, with the
real PostgreSQL, the real broker and the loop as a real process; no beat, no Celery."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from orders.services import OrderLineRequest, order_place
from outbox import kafka as outbox_kafka
from outbox.models import OutboxEvent
from outbox.recording import outbox_record
from outbox.relay import listen
from outbox.relay.drain import relay_drain
from outbox.relay.listen import Waker, _listen_connect, _take_notifications, relay_loop
from outbox.relay.stopping import relay_stop_clear, relay_stop_request
from tests.factories import product_make, user_make
from tests.outbox.events_for_tests import SequenceRecorded, outbox_rows_bulk
from tests.support.kafka import kafka_read_all
from tests.support.processes import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.relay_clients, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite keeps the Celery kick")


def _loop(
    subprocess_env: dict[str, str], tmp_path: Path, *, name: str = "loop", poll_s: float = 600.0
) -> ManagedProcess:
    # A poll far longer than the test: only a notification can explain a prompt publication.
    process = ManagedProcess(
        name=name,
        env=subprocess_env,
        log_path=tmp_path / f"{name}.log",
        ready_text="relay loop listening",
        argv=[sys.executable, "manage.py", "relay_loop", "--poll-interval", str(poll_s)],
    )
    process.start(timeout=60)
    return process


def _wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_committed_order_reaches_kafka_through_the_loop_without_beat(subprocess_env, kafka_topics, tmp_path):
    # given a relay loop that polls only every 10 minutes, no beat, no Celery worker
    product = product_make(price="4.00", stock=5)
    loop = _loop(subprocess_env, tmp_path)
    assert _wait_until(lambda: not OutboxEvent.objects.filter(status="pending").exists(), 30)
    # when an order commits
    order = order_place(user=user_make(), lines=[OrderLineRequest(product_id=product.id, quantity=2)])
    # then its events reach the topic, published by the loop that heard the commit
    records = kafka_read_all(kafka_topics["order-events"], expected=1, timeout_s=20)
    assert [(r.key, r.headers["event_type"]) for r in records] == [(str(order.id).encode(), b"OrderCreated")]
    assert _wait_until(lambda: OutboxEvent.objects.get(type="OrderCreated").status == "published", 10)
    assert loop.stop() == 0
    assert "relay loop stopped" in loop.log_tail()


def test_rows_no_notification_announced_are_published_by_the_start_drain_and_the_poll(
    subprocess_env, kafka_topics, tmp_path
):
    # given rows committed while no loop listened (their NOTIFY reached nobody), and one row
    # that becomes due only later (no notification will ever announce it)
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=3, per_key=2)
    later = outbox_rows_bulk(topic=topic, keys=1, per_key=1)[0]
    OutboxEvent.objects.filter(pk=later.pk).update(
        key="late", aggregateid="late", available_at=timezone.now() + timedelta(seconds=2)
    )
    # when a loop starts, polling every half second
    loop = _loop(subprocess_env, tmp_path, poll_s=0.5)
    # then the six are published by its first drain, and the late one by a poll
    records = kafka_read_all(topic, expected=7, timeout_s=30)
    assert len(records) == 7
    assert [r.key for r in records].count(b"late") == 1
    assert _wait_until(lambda: OutboxEvent.objects.filter(status="published").count() == 7, 10)
    loop.stop()


def test_an_abandoned_row_is_published_while_commits_keep_the_loop_awake(subprocess_env, kafka_topics, tmp_path):
    # given a row its relay died holding (lease expired), which quick claims never take, and a
    # loop that polls every half second
    topic = kafka_topics["catalog-events"]
    abandoned = outbox_rows_bulk(topic=topic, keys=1, per_key=1)[0]
    loop = _loop(subprocess_env, tmp_path, poll_s=0.5)
    assert _wait_until(lambda: OutboxEvent.objects.get(pk=abandoned.pk).status == "published", 20)
    OutboxEvent.objects.filter(pk=abandoned.pk).update(
        status="pending",
        published_at=None,
        claim_token=uuid.uuid4(),
        claim_expires_at=timezone.now() - timedelta(seconds=1),
    )
    # when events commit every 50 ms, so that the loop is always woken before its poll timeout
    deadline = time.monotonic() + 6
    published = False
    n = 0
    while time.monotonic() < deadline and not published:
        with transaction.atomic():
            outbox_record(event=SequenceRecorded(product_id=f"busy-{n}", sequence=n))
        n += 1
        time.sleep(0.05)
        published = OutboxEvent.objects.get(pk=abandoned.pk).status == "published"
    # then a full drain still runs within a few poll intervals and takes the abandoned row
    assert published, loop.log_tail()
    assert OutboxEvent.objects.get(pk=abandoned.pk).attempts == 1  # counted as an attempt
    loop.stop()


def test_the_loop_outlives_its_database_sessions_being_terminated(subprocess_env, kafka_topics, tmp_path):
    # given a running loop that has published a first row
    topic = kafka_topics["catalog-events"]
    first = outbox_rows_bulk(topic=topic, keys=1, per_key=1)[0]
    loop = _loop(subprocess_env, tmp_path, poll_s=0.5)
    assert _wait_until(lambda: OutboxEvent.objects.get(pk=first.pk).status == "published", 20)
    # when every session of the loop is terminated (what a PostgreSQL restart or failover does)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    # and an event commits after that
    with transaction.atomic():
        event = SequenceRecorded(product_id="after", sequence=1)
        outbox_record(event=event)
    # then the loop reconnects and publishes it, and is still running
    assert _wait_until(lambda: OutboxEvent.objects.get(event_id=event.event_id).status == "published", 30), (
        loop.log_tail()
    )
    assert loop.running, loop.log_tail()
    loop.stop()


@contextlib.contextmanager
def _loop_in_this_process(*, poll_s: float = 0.2) -> Iterator[threading.Thread]:
    """`relay_loop` on a thread of this process (so that a test may patch it), stopped at the end."""
    waker = Waker()

    def run() -> None:
        try:
            relay_loop(poll_interval_s=poll_s, waker=waker)
        finally:
            connections.close_all()

    loop = threading.Thread(target=run, name="relay-loop-under-test")
    loop.start()
    try:
        yield loop
    finally:
        relay_stop_request()
        waker.wake()
        loop.join(60)
        if not loop.is_alive():  # a loop still running would carry on into the next tests
            relay_stop_clear()
    assert not loop.is_alive()


def test_a_notification_is_served_while_the_loops_full_drain_is_still_running(kafka_topics, monkeypatch):
    # given a relay loop whose full drain is held up, as one behind a backlog that no claim may
    # take is (every key held back by a failed row in backoff: 250 ms a claim at 100,000 rows)
    full_started, full_release = threading.Event(), threading.Event()
    drain_for_real = relay_drain

    def drain(**options):
        if not options.get("quick_claims"):
            full_started.set()
            full_release.wait(60)
        return drain_for_real(**options)

    monkeypatch.setattr(listen, "relay_drain", drain)
    with _loop_in_this_process():
        try:
            assert full_started.wait(30), "the loop never started its full drain"
            # when an event commits
            with transaction.atomic():
                event = SequenceRecorded(product_id="heard", sequence=0)
                outbox_record(event=event)
            # then the loop publishes it at once, its full drain still waiting
            assert _wait_until(lambda: OutboxEvent.objects.get(event_id=event.event_id).status == "published", 15)
            assert not full_release.is_set()
        finally:
            full_release.set()


def test_the_loop_makes_its_producer_before_the_first_event(kafka_topics):
    # given no producer in the process, and nothing to send
    outbox_kafka.producer_reset()
    # when a relay loop starts
    with _loop_in_this_process():
        # then it makes its producer at once: the first event heard would otherwise wait for it
        # (a fresh producer took 100-250 ms to send its first record to a topic)
        assert _wait_until(outbox_kafka.producer_made, 15)
        assert OutboxEvent.objects.count() == 0


def test_the_listening_session_connects_with_the_databases_options():
    # given database OPTIONS the listening session must honour too (as sslmode=verify-full
    # must): here one that this server, a primary, refuses
    options = connections["default"].settings_dict["OPTIONS"]
    options["target_session_attrs"] = "read-only"
    try:
        # when the loop connects its listening session, then it is refused as Django's would be
        with pytest.raises(psycopg.OperationalError, match="read-only"):
            _listen_connect("default").close()
    finally:
        del options["target_session_attrs"]


def test_the_notification_leaves_at_commit_and_never_for_a_rollback():
    # given a session listening as the loop does
    listener = _listen_connect("default")
    try:
        # when one transaction commits two events, and another rolls back
        first, second = (SequenceRecorded(product_id="k", sequence=n) for n in (1, 2))
        with transaction.atomic():
            outbox_record(event=first)
            assert _take_notifications(listener) == []  # not before the commit
            outbox_record(event=second)
        with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012 - the rolled-back block is what is tested
            outbox_record(event=SequenceRecorded(product_id="k", sequence=3))
            raise RuntimeError("rolled back")
        # then the commit was heard (one notification per recorded statement, named by its
        # row's seq and event id), the rollback was not (delivery is asynchronous: wait for
        # the two, then a little more for a third that must not come)
        heard: list[str] = []
        deadline = time.monotonic() + 5
        while len(heard) < 2 and time.monotonic() < deadline:
            heard += _take_notifications(listener)
            time.sleep(0.01)
        time.sleep(0.2)
        heard += _take_notifications(listener)
        seq_of = {str(row.event_id): row.seq for row in OutboxEvent.objects.all()}
        assert heard == [
            f"{seq_of[str(first.event_id)]} {first.event_id}",
            f"{seq_of[str(second.event_id)]} {second.event_id}",
        ]
    finally:
        listener.close()


def _record_in_transactions(*, keys: int, per_key: int) -> list[str]:
    """keys x per_key events, one transaction each (one NOTIFY each), interleaved across keys."""
    event_ids = []
    for sequence in range(per_key):
        for key in range(keys):
            event = SequenceRecorded(product_id=f"k{key}", sequence=sequence)
            with transaction.atomic():
                outbox_record(event=event)
            event_ids.append(str(event.event_id))
    return event_ids


def test_two_loops_publish_each_event_exactly_once_in_key_order(subprocess_env, kafka_topics, tmp_path):
    # given two relay loops hearing the same notifications
    loops = [_loop(subprocess_env, tmp_path, name=f"loop{n}") for n in (1, 2)]
    # when 400 events of 8 keys commit one by one
    event_ids = _record_in_transactions(keys=8, per_key=50)
    # then each is on the topic once, and each key's events in their order
    records = kafka_read_all(kafka_topics["catalog-events"], expected=len(event_ids), timeout_s=60)
    time.sleep(1)  # a duplicate would arrive right behind
    records = kafka_read_all(kafka_topics["catalog-events"], timeout_s=5)
    read_ids = [r.headers["event_id"].decode() for r in records]
    assert sorted(read_ids) == sorted(event_ids)
    by_key: dict[bytes, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None  # every outbox record is keyed by its aggregate
        by_key.setdefault(record.key, []).append(json.loads(record.value)["sequence"])
    assert by_key == {f"k{key}".encode(): list(range(50)) for key in range(8)}
    assert _wait_until(lambda: OutboxEvent.objects.exclude(status="published").count() == 0, 15)
    for loop in loops:
        assert loop.stop() == 0


def test_sigterm_stops_the_loop_mid_backlog_and_hands_its_claims_back(subprocess_env, kafka_topics, tmp_path):
    # given a loop draining a backlog
    outbox_rows_bulk(topic=kafka_topics["catalog-events"], keys=50, per_key=800)
    loop = _loop(subprocess_env, tmp_path)
    assert _wait_until(lambda: OutboxEvent.objects.filter(status="published").exists(), 30)
    # when it is sent SIGTERM
    assert loop.popen is not None  # started by _loop()
    loop.popen.send_signal(signal.SIGTERM)
    # then it exits at once, cleanly, and holds no claim any more
    assert loop.wait(timeout=20) == 0
    assert "relay loop stopped" in loop.log_tail()
    assert not OutboxEvent.objects.exclude(status="published").filter(claim_token__isnull=False).exists()
    assert OutboxEvent.objects.exclude(status="published").exists(), "the backlog was drained before the stop"


def test_the_loop_freezes_its_startup_objects_out_of_the_garbage_collectors_walk(subprocess_env, tmp_path):
    # given a relay loop started as `manage.py relay_loop` runs it
    loop = _loop(subprocess_env, tmp_path)
    try:
        started = [line for line in loop.log_path.read_text().splitlines() if "relay loop started" in line]
    finally:
        loop.stop()
    # then what it held at start (Django, the modules) is frozen: a full collection no longer
    # walks it (it stopped the loop 50-70 ms every few seconds at 100 events/s, bench/latency.py)
    frozen = re.search(r"gc_frozen_objects=(\d+)", started[0]) if started else None
    assert frozen is not None, loop.log_tail()
    assert int(frozen.group(1)) > 10_000


def test_the_loop_says_it_is_listening_only_once_it_listens(subprocess_env, tmp_path):
    # given a relay loop started as `manage.py relay_loop` runs it, its ready line just seen
    loop = _loop(subprocess_env, tmp_path)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay-loop'"
                " AND query ILIKE 'LISTEN%%'"
            )
            (listening,) = cursor.fetchone()
        log = loop.log_path.read_text()
    finally:
        loop.stop()
    # then its session has already run LISTEN (a process manager or a test that commits once
    # the line is out relies on it), and it logged its start before
    assert listening == 1, log
    assert log.index("relay loop started") < log.index("relay loop listening"), log
