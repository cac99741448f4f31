"""Operating the outbox: status (the health check), requeue, the retention purge, the admin's
summary, backoff, the SQLite relay lock, the producer's lifetime and the debounced kick."""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kafka.future import Future
from kafka.producer.future import RecordMetadata
from kafka.structs import TopicPartition

from outbox import kafka as outbox_kafka, kick
from outbox.housekeeping import outbox_purge_published
from outbox.models import OutboxEvent
from outbox.relay import backoff_seconds, relay_drain
from tests.factories import user_make
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = pytest.mark.django_db


def _rows(topic: str, count: int, **fields: object) -> list[OutboxEvent]:
    """`count` rows of one key on `topic`, then `fields` set on every one of them."""
    rows = outbox_rows_bulk(topic=topic, keys=1, per_key=count)
    OutboxEvent.objects.filter(seq__in=[row.seq for row in rows]).update(**fields)
    return list(OutboxEvent.objects.filter(seq__in=[row.seq for row in rows]).order_by("seq"))


def _status(*args: str) -> tuple[int | str | None, dict]:
    out = StringIO()
    try:
        call_command("outbox", "status", "--json", *args, stdout=out, stderr=StringIO())
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    return code, json.loads(out.getvalue())


def test_status_counts_each_topic_and_exits_1_past_the_age_threshold(settings):
    # given orders: two pending (the older two minutes old), one dead, one published just now
    # and one long ago; catalog: one published just now
    now = timezone.now()
    older, _newer = _rows("orders", 2)
    OutboxEvent.objects.filter(seq=older.seq).update(created_at=now - timedelta(seconds=120))
    _rows("orders", 1, status=OutboxEvent.Status.DEAD)
    _rows("orders", 1, status=OutboxEvent.Status.PUBLISHED, published_at=now)
    _rows("orders", 1, status=OutboxEvent.Status.PUBLISHED, published_at=now - timedelta(minutes=5))
    _rows("catalog", 1, status=OutboxEvent.Status.PUBLISHED, published_at=now)

    # when the threshold is above the oldest pending age
    code, report = _status("--max-age", "600")
    # then the figures are per topic and the check passes
    assert code == 0
    by_topic = {row["topic"]: row for row in report["topics"]}
    assert by_topic["orders"]["pending"] == 2
    assert by_topic["orders"]["dead"] == 1
    assert by_topic["orders"]["published_last_minute"] == 1
    assert 119 <= by_topic["orders"]["oldest_pending_age_s"] < 180
    assert by_topic["catalog"] == {
        "topic": "catalog",
        "pending": 0,
        "dead": 0,
        "oldest_pending_age_s": None,
        "published_last_minute": 1,
    }

    # when the threshold is below it, given on the command line or by OUTBOX_STALE_SECONDS
    assert _status("--max-age", "60")[0] == 1
    settings.OUTBOX_STALE_SECONDS = 60
    assert _status()[0] == 1
    settings.OUTBOX_STALE_SECONDS = 600
    assert _status()[0] == 0


def test_status_of_an_empty_outbox_is_healthy():
    code, report = _status()
    assert (code, report) == (0, {"topics": [], "oldest_pending_age_s": 0.0})


def test_requeue_puts_named_dead_rows_back_to_pending_then_all_of_them():
    first, second = _rows(
        "orders", 2, status=OutboxEvent.Status.DEAD, attempts=12, last_error="MessageSizeTooLargeError"
    )
    published = _rows("orders", 1, status=OutboxEvent.Status.PUBLISHED)[0]

    with pytest.raises(CommandError, match="--all"):
        call_command("outbox", "requeue", stdout=StringIO())

    call_command("outbox", "requeue", str(first.event_id), stdout=StringIO())
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.attempts) == (OutboxEvent.Status.PENDING, 0)
    assert first.available_at <= timezone.now()
    assert second.status == OutboxEvent.Status.DEAD

    out = StringIO()
    call_command("outbox", "requeue", "--all", stdout=out)
    second.refresh_from_db()
    published.refresh_from_db()
    assert "requeued 1 dead row(s)" in out.getvalue()
    assert second.status == OutboxEvent.Status.PENDING
    assert published.status == OutboxEvent.Status.PUBLISHED


def test_purge_deletes_only_published_rows_past_retention_in_bounded_chunks(settings):
    settings.OUTBOX_RETENTION = timedelta(days=7)
    long_ago = timezone.now() - timedelta(days=8)
    expired = _rows("orders", 5, status=OutboxEvent.Status.PUBLISHED, published_at=long_ago)
    recent = _rows("orders", 2, status=OutboxEvent.Status.PUBLISHED, published_at=timezone.now() - timedelta(days=6))
    old_pending = _rows("orders", 1, created_at=long_ago)
    old_dead = _rows("orders", 1, status=OutboxEvent.Status.DEAD, created_at=long_ago)

    with CaptureQueriesContext(connection) as queries:
        deleted = outbox_purge_published(chunk_size=2)

    assert deleted == 5
    assert not OutboxEvent.objects.filter(seq__in=[row.seq for row in expired]).exists()
    kept = [row.seq for row in (*recent, *old_pending, *old_dead)]
    assert sorted(OutboxEvent.objects.values_list("seq", flat=True)) == sorted(kept)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1 rows: no statement deletes more than a chunk


def test_republish_sends_a_lost_topic_again_once_the_claims_taken_before_are_written_back(settings):
    # given a topic deleted by mistake and made again: its published rows' records went with it
    # (OPERATIONS.md, "A topic deleted by mistake"); another topic's rows are fine
    settings.KAFKA_TOPICS = {**settings.KAFKA_TOPICS, "order-events": "orders", "catalog-events": "catalog"}
    settings.OUTBOX_CLAIM_TTL = 2
    now = timezone.now()
    lost = _rows("orders", 3, status=OutboxEvent.Status.PUBLISHED, published_at=now - timedelta(hours=1))
    older = _rows("orders", 1, status=OutboxEvent.Status.PUBLISHED, published_at=now - timedelta(days=2))[0]
    other = _rows("catalog", 2, status=OutboxEvent.Status.PUBLISHED, published_at=now)
    # and a batch sent to the old topic just before it went, still leased: its write-back marks
    # it published after the command started; a requeue that did not wait would miss it
    in_flight = _rows("orders", 1, claim_token=uuid.uuid4(), claim_expires_at=now + timedelta(seconds=1))[0]

    def written_back_later(*_: object) -> None:
        OutboxEvent.objects.filter(seq=in_flight.seq).update(
            status=OutboxEvent.Status.PUBLISHED, published_at=timezone.now(), claim_token=None, claim_expires_at=None
        )

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        written_back_later()

    # when the operator republishes the topic's rows published in the last day
    out = StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("outbox.housekeeping.time.sleep", sleep)
        call_command(
            "outbox", "republish", "--topic", "orders", "--since", (now - timedelta(days=1)).isoformat(), stdout=out
        )
    # then it waited for the claim, and every row of the topic published since then, that one
    # included, is pending again (due now, no lease); older and other rows stay
    assert waits
    pending = set(OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).values_list("seq", flat=True))
    assert pending == {row.seq for row in lost} | {in_flight.seq}
    assert not OutboxEvent.objects.filter(seq__in=pending, claim_token__isnull=False).exists()
    assert OutboxEvent.objects.get(seq=older.seq).status == OutboxEvent.Status.PUBLISHED
    assert all(OutboxEvent.objects.get(seq=row.seq).status == OutboxEvent.Status.PUBLISHED for row in other)
    assert "republished 4 row(s) of orders" in out.getvalue()


def test_republish_says_so_when_a_lease_outlives_its_wait(settings, capsys):
    # given a row of the topic still leased once the wait (OUTBOX_CLAIM_TTL, 0 here, and a
    # second) is over: its relay may be paused, and write it back as published later
    settings.KAFKA_TOPICS = {**settings.KAFKA_TOPICS, "order-events": "orders"}
    settings.OUTBOX_CLAIM_TTL = 0
    _rows("orders", 2, status=OutboxEvent.Status.PUBLISHED, published_at=timezone.now())
    _rows("orders", 1, claim_token=uuid.uuid4(), claim_expires_at=timezone.now() - timedelta(seconds=1))
    # when the operator republishes the topic
    with pytest.raises(SystemExit) as exited:
        call_command("outbox", "republish", "--topic", "orders")
    # then the rows are republished, and the command says the lease was left, with what to run
    # once it settles, and exits 1 (before: it said nothing and exited 0)
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert "republished 2 row(s) of orders" in out
    assert "1 row(s) of orders leased before this were not written back" in err
    assert "outbox republish --topic orders --since " in err


def test_republish_refuses_a_topic_the_outbox_does_not_write(settings):
    settings.KAFKA_TOPICS = {**settings.KAFKA_TOPICS, "order-events": "orders"}
    with pytest.raises(CommandError, match="not a topic of the outbox"):
        call_command("outbox", "republish", "--topic", "ordres", stdout=StringIO())
    with pytest.raises(CommandError, match="--since"):
        call_command("outbox", "republish", "--topic", "orders", "--since", "yesterday", stdout=StringIO())


def test_beat_drains_every_poll_interval_and_purges_hourly():
    from commerce.celery import app

    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["outbox.relay_drain"] == settings.OUTBOX_POLL_INTERVAL
    assert schedule["outbox.purge_published"] == 3600.0
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    assert {"outbox.relay_drain", "outbox.purge_published"} <= set(app.tasks)


def test_the_admin_outbox_list_shows_the_status_table(client):
    _rows("orders", 3)
    _rows("orders", 1, status=OutboxEvent.Status.DEAD)
    admin = user_make(is_staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)

    response = client.get("/admin/outbox/outboxevent/")

    assert response.status_code == 200
    summary = response.context["outbox_summary"]
    assert [(row["topic"], row["pending"], row["dead"]) for row in summary] == [("orders", 3, 1)]
    html = response.content.decode()
    assert 'id="outbox-summary"' in html
    assert '<td class="pending">3</td>' in html
    assert '<td class="dead">1</td>' in html


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(settings):
    settings.OUTBOX_BACKOFF_BASE, settings.OUTBOX_BACKOFF_MAX = 0.5, 60.0
    for attempts in range(1, 16):
        ceiling = min(60.0, 0.5 * 2 ** (attempts - 1))
        delays = [backoff_seconds(attempts) for _ in range(200)]
        assert all(min(0.25, ceiling) <= delay <= ceiling for delay in delays), attempts
        if attempts >= 3:
            assert len(set(delays)) > 100, "no jitter: retries of many rows would stampede"
    assert max(backoff_seconds(4) for _ in range(200)) > 2.0  # 0.5 * 2^3 = 4: it does grow


def test_on_sqlite_a_second_drain_returns_at_once_while_one_holds_the_lock():
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL relays share the work through row locks, not a file lock")
    outbox_rows_bulk(topic="orders", keys=1, per_key=3)
    with open(settings.VAR_DIR / "outbox-relay.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another relay is draining
        result = relay_drain()
    assert (result.batches, result.published) == (0, 0)
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count() == 3


class _ProducerStub:
    """Stands in for KafkaProducer: records how it was made and whether it was closed."""

    made: list[_ProducerStub] = []

    def __init__(self, **config: object) -> None:
        self.config = config
        self.closed = False
        _ProducerStub.made.append(self)

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@pytest.fixture
def producer_stub(monkeypatch):
    outbox_kafka.producer_reset()
    _ProducerStub.made = []
    monkeypatch.setattr(outbox_kafka, "KafkaProducer", _ProducerStub)
    yield _ProducerStub
    outbox_kafka.producer_close()


class _AcknowledgingStub(_ProducerStub):
    """A producer that acknowledges every record at once, and notes whose producer it is."""

    def __init__(self, **config: object) -> None:
        super().__init__(**config)
        self.name = outbox_kafka.producer_name()

    def send(self, topic: str, key: bytes, value: bytes, headers: list) -> Future:
        future = Future()
        future.success(RecordMetadata(topic, 0, TopicPartition(topic, 0), 1, 0, None, len(key), len(value), 0))
        return future

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_a_relay_with_a_producer_of_its_own_sends_every_batch_with_it(monkeypatch):
    # given 100 rows: batches of 60 and 40, both large enough for the drain's sender thread
    outbox_kafka.producer_reset()
    _ProducerStub.made = []
    monkeypatch.setattr(outbox_kafka, "KafkaProducer", _AcknowledgingStub)
    outbox_rows_bulk(topic="orders", keys=50, per_key=2)
    # when a relay drains with a producer of its own (the relay loop's full drains)
    try:
        with outbox_kafka.producer_own("beside"):
            result = relay_drain(batch_size=60)
            outbox_kafka.producer_close()
    finally:
        outbox_kafka.producer_close()
    # then its one producer sent them all: a batch sent with another relay's producer would be
    # out of its failure handling (the drain drops its own producer after a failed send)
    assert result.published == 100
    assert [getattr(producer, "name", None) for producer in _ProducerStub.made] == ["beside"]


def test_one_idempotent_acks_all_producer_per_process_and_a_new_one_after_fork(producer_stub, monkeypatch):
    first = outbox_kafka.producer_get()
    assert outbox_kafka.producer_get() is first
    assert isinstance(first, producer_stub)
    assert first.config["acks"] == "all"
    assert first.config["enable_idempotence"] is True

    # a forked child (another pid) must not use its parent's producer
    monkeypatch.setattr(os, "getpid", lambda: -1)  # the very module outbox.kafka reads it from
    in_child = outbox_kafka.producer_get()
    assert in_child is not first
    assert len(producer_stub.made) == 2


def test_the_worker_process_shutdown_closes_the_producer(producer_stub):
    from celery.signals import worker_process_shutdown

    import outbox.tasks  # noqa: F401 - connects the signal handler

    producer = outbox_kafka.producer_get()
    assert isinstance(producer, producer_stub)
    worker_process_shutdown.send(sender=None, pid=0, exitcode=0)
    assert producer.closed
    assert outbox_kafka.producer_get() is not producer  # a later drain gets a fresh one


def test_the_kick_is_debounced_leading_and_trailing(settings, monkeypatch):
    from outbox.tasks import relay_drain_task

    settings.OUTBOX_KICK_DEBOUNCE = 30.0  # the whole test runs inside one window
    countdowns: list[float | None] = []
    monkeypatch.setattr(relay_drain_task, "apply_async", lambda countdown=None, **kwargs: countdowns.append(countdown))
    monkeypatch.setattr(kick._window, "ends_at", 0.0)
    monkeypatch.setattr(kick._window, "trailing_scheduled", False)

    kick._kick()
    kick.relay_kick_taken()  # the drain started: later commits need a kick of their own
    for _ in range(49):
        kick._kick()

    # one kick at once, one at the end of the window for the commits that came after it
    assert len(countdowns) == 2
    assert countdowns[0] is None
    assert countdowns[1] is not None
    assert 29.0 < countdowns[1] <= 30.0

    # a commit after the window kicks at once again
    kick.relay_kick_taken()
    monkeypatch.setattr(kick._window, "ends_at", 0.0)
    kick._kick()
    assert countdowns[2] is None


def test_a_burst_of_kicks_from_many_processes_is_one_message_until_the_drain_starts(settings, monkeypatch):
    from outbox.tasks import relay_drain_task

    sent: list[float | None] = []
    monkeypatch.setattr(relay_drain_task, "apply_async", lambda countdown=None, **kwargs: sent.append(countdown))

    def kick_from_a_fresh_process() -> None:
        # each process has its own debounce window; only the shared cache connects them
        monkeypatch.setattr(kick._window, "ends_at", 0.0)
        monkeypatch.setattr(kick._window, "trailing_scheduled", False)
        kick._kick()

    # given a kick waiting in the queue
    kick_from_a_fresh_process()
    # when 100 commits in other processes kick before the drain starts
    for _ in range(100):
        kick_from_a_fresh_process()
    # then the one waiting message covers them all
    assert len(sent) == 1

    # when the drain starts (it clears the mark before claiming rows), a later commit kicks again
    kick.relay_kick_taken()
    kick_from_a_fresh_process()
    assert len(sent) == 2


def test_the_drain_task_clears_the_kick_mark_before_it_drains(settings, monkeypatch):
    from django.core.cache import cache

    import outbox.tasks as tasks

    seen: list[object] = []
    cache.set(kick.KICK_PENDING_KEY, 1)

    class Result:
        def as_dict(self) -> dict[str, object]:
            return {}

    def drain(**_: object) -> Result:
        seen.append(cache.get(kick.KICK_PENDING_KEY))
        return Result()

    monkeypatch.setattr(tasks, "relay_drain", drain)
    tasks.relay_drain_task()
    assert seen == [None]


def test_relay_drains_have_a_queue_of_their_own_that_a_plain_worker_also_consumes(settings):
    from commerce.celery import app

    router = app.amqp.router
    assert router.route({}, "outbox.relay_drain")["queue"].name == settings.OUTBOX_CELERY_QUEUE
    assert router.route({}, "orders.follow_payment")["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE
    assert settings.OUTBOX_CELERY_QUEUE != settings.CELERY_TASK_DEFAULT_QUEUE
    # a worker without -Q consumes task_queues: both
    assert {q.name for q in app.conf.task_queues} == {settings.CELERY_TASK_DEFAULT_QUEUE, settings.OUTBOX_CELERY_QUEUE}


def test_the_kick_is_registered_on_commit_only_when_enabled(settings, django_capture_on_commit_callbacks):
    settings.OUTBOX_KICK_ENABLED = True
    settings.OUTBOX_WAKEUP = "celery"  # on PostgreSQL `auto` is the NOTIFY wake-up, without a kick
    with django_capture_on_commit_callbacks() as callbacks:
        kick.relay_kick_on_commit()
    assert callbacks == [kick._kick]

    settings.OUTBOX_KICK_ENABLED = False
    with django_capture_on_commit_callbacks() as callbacks:
        kick.relay_kick_on_commit()
    assert callbacks == []


@pytest.mark.integration
def test_ensure_topics_creates_the_topics_and_their_dlq_with_the_partitions_once(kafka_bootstrap, settings):
    from kafka import KafkaAdminClient

    from tests.support.kafka import kafka_topics_delete

    suffix = uuid.uuid4().hex[:10]
    settings.KAFKA_TOPICS = {"catalog-events": f"ensure-{suffix}-catalog", "order-events": f"ensure-{suffix}-orders"}
    settings.KAFKA_TOPIC_PARTITIONS = 3
    expected = [
        f"ensure-{suffix}-catalog",
        f"ensure-{suffix}-orders",
        f"ensure-{suffix}-catalog.dlq",
        f"ensure-{suffix}-orders.dlq",
    ]
    try:
        first, second = StringIO(), StringIO()
        call_command("ensure_topics", stdout=first)
        call_command("ensure_topics", stdout=second)

        assert first.getvalue().split("\n")[:-1] == [f"{name}: created" for name in expected]
        assert second.getvalue().split("\n")[:-1] == [f"{name}: exists" for name in expected]
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            described = admin.describe_topics(expected)
        finally:
            admin.close()
        assert {topic["name"]: len(topic["partitions"]) for topic in described} == dict.fromkeys(expected, 3)
    finally:
        kafka_topics_delete(kafka_bootstrap, expected)


def test_the_table_has_the_column_names_debeziums_outbox_router_expects_by_default():
    with connection.cursor() as cursor:
        columns = {
            column.name for column in connection.introspection.get_table_description(cursor, OutboxEvent._meta.db_table)
        }
    assert {"id", "aggregatetype", "aggregateid", "type", "payload"} <= columns


def test_drain_until_empty_waits_for_keys_another_relay_holds_then_gives_up(settings):
    # given a key whose oldest row is under another relay's live lease
    settings.OUTBOX_CLAIM_TTL = 0.5
    held, _behind = _rows("orders", 2)
    OutboxEvent.objects.filter(seq=held.seq).update(
        claim_token=uuid.uuid4(), claim_expires_at=timezone.now() + timedelta(minutes=5)
    )
    out, err = StringIO(), StringIO()

    # when a drain runs until empty
    call_command("outbox", "drain", "--until-empty", stdout=out, stderr=err)

    # then it claimed nothing (the later row waits behind the held one) and stopped once
    # nothing had moved for the claim TTL, saying why
    assert out.getvalue().strip().endswith("published 0")
    assert "2 due row(s) pending, none claimable" in err.getvalue()
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count() == 2


def test_with_the_notify_wake_up_the_celery_kick_is_not_registered(settings, django_capture_on_commit_callbacks):
    # given the kick on and the NOTIFY wake-up (PostgreSQL) or its fallback (SQLite)
    settings.OUTBOX_KICK_ENABLED = True
    settings.OUTBOX_WAKEUP = "notify"
    with django_capture_on_commit_callbacks() as callbacks:
        kick.relay_kick_on_commit()
    # then PostgreSQL leaves the wake-up to the relay loop; SQLite cannot NOTIFY and kicks
    expected = [] if connection.vendor == "postgresql" else [kick._kick]
    assert callbacks == expected
