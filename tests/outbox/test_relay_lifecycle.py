"""The relay's lifecycle: a row that kills its relay ends dead after OUTBOX_MAX_ATTEMPTS (attempts
count at claim time), and a stopping relay hands its claims back at once."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import timedelta

import pytest
from django.utils import timezone
from kafka.producer.future import RecordMetadata
from kafka.structs import TopicPartition

from outbox.models import OutboxEvent
from outbox.relay import DrainResult, claim_batch, write_back
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.kafka import kafka_read_all
from tests.support.processes import celery_worker_managed


def _leases_expire() -> None:
    OutboxEvent.objects.filter(claim_token__isnull=False).update(claim_expires_at=timezone.now() - timedelta(seconds=1))


@pytest.mark.django_db
def test_a_row_whose_relay_keeps_dying_counts_attempts_at_claim_and_ends_dead(settings):
    settings.OUTBOX_MAX_ATTEMPTS = 3
    settings.OUTBOX_DEAD_BLOCKS_KEY = False
    # given two rows of one key, claimed by a relay that dies (its lease just expires)
    outbox_rows_bulk(topic="t", keys=1, per_key=2)
    first, second = OutboxEvent.objects.order_by("seq").values_list("seq", flat=True)
    assert [r.seq for r in claim_batch(token=uuid.uuid4(), limit=10)] == [first, second]
    # when the next relays take the abandoned row over, and die holding it too
    late_tokens = []
    for expected_attempts in (1, 2):
        _leases_expire()
        token = uuid.uuid4()
        # then each takes the abandoned row alone, counting the abandoned lease as an attempt
        claimed = claim_batch(token=token, limit=10)
        assert [(r.seq, r.attempts) for r in claimed] == [(first, expected_attempts)]
        late_tokens.append((token, claimed))
    # and the claim after the last allowed attempt marks it dead, with the reason, and moves on
    _leases_expire()
    claimed = claim_batch(token=uuid.uuid4(), limit=10)
    assert [r.seq for r in claimed] == [second]
    dead = OutboxEvent.objects.get(seq=first)
    assert (dead.status, dead.attempts, dead.claim_token) == ("dead", 3, None)
    assert "relay died" in dead.last_error
    assert "3 times" in dead.last_error
    # and a relay that held it earlier cannot mark it: the write-back is still fenced
    token, rows = late_tokens[-1]
    result = DrainResult()
    write_back(
        token=token,
        rows=rows,
        outcomes={rows[0].seq: RecordMetadata("t", 0, TopicPartition("t", 0), 1, 0, None, 0, 0, 0)},
        result=result,
    )
    assert result.fenced_out == 1
    assert OutboxEvent.objects.get(seq=first).status == "dead"


def _first_seen_by_key(records) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        by_key[record.key.decode()].append(json.loads(record.value)["sequence"])
    return {key: list(dict.fromkeys(sequences)) for key, sequences in by_key.items()}


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.integration
@pytest.mark.relay_clients
@pytest.mark.fault
@pytest.mark.django_db(transaction=True)
def test_a_row_whose_send_kills_the_worker_ends_dead_and_everything_else_is_published(
    kafka_topics, subprocess_env, tmp_path
):
    from outbox.tasks import relay_drain_task

    # given 100 rows over 5 keys; sending key 1's fifth row kills the worker process
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=5, per_key=20)
    poison = OutboxEvent.objects.filter(key="1").order_by("seq")[4]
    env = dict(
        subprocess_env,
        OUTBOX_FAULT_CRASH_ON_EVENT_ID=str(poison.event_id),
        OUTBOX_MAX_ATTEMPTS="3",
        OUTBOX_CLAIM_TTL="10",
        OUTBOX_DEAD_BLOCKS_KEY="off",
        OUTBOX_BATCH_SIZE="30",
    )
    # when real workers drain, one after the other as each dies (a supervisor restarting them)
    crashes = 0
    for run in range(6):
        if OutboxEvent.objects.get(seq=poison.seq).status == "dead":
            break
        worker = celery_worker_managed(env=env, log_path=tmp_path / f"worker-{run}.log")
        worker.start(timeout=60)
        relay_drain_task.delay()
        _wait_for(lambda: not worker.running, 30)  # noqa: B023 - this run's worker
        if worker.running:
            worker.stop()
        else:
            crashes += 1
            worker.stop()
            time.sleep(10.5)  # its lease expires; nothing may take the row before that
    # then the row died after three attempts, each a relay that died holding it
    poison.refresh_from_db()
    assert (poison.status, poison.attempts) == ("dead", 3), poison.last_error
    assert "relay died" in poison.last_error
    assert crashes == 3
    # and a worker that keeps running publishes the rest, the poison row's own key included
    worker = celery_worker_managed(env=env, log_path=tmp_path / "worker-last.log")
    worker.start(timeout=60)

    def kicked_and_drained() -> bool:
        relay_drain_task.delay()
        return not OutboxEvent.objects.filter(status="pending").exists()

    drained = _wait_for(kicked_and_drained, 90)
    assert drained, worker.log_tail(40)
    worker.stop()
    assert OutboxEvent.objects.filter(status="published").count() == 99
    records = kafka_read_all(topic, timeout_s=30)
    assert {r.headers["event_id"] for r in records} == {
        str(e).encode() for e in OutboxEvent.objects.filter(status="published").values_list("event_id", flat=True)
    }
    first_seen = _first_seen_by_key(records)
    assert first_seen["1"] == [n for n in range(20) if n != 4]
    assert all(first_seen[str(k)] == list(range(20)) for k in range(2, 6))


@pytest.mark.integration
@pytest.mark.relay_clients
@pytest.mark.fault
@pytest.mark.django_db(transaction=True)
def test_sigterm_mid_drain_hands_every_unsent_claim_back_at_once(kafka_topics, subprocess_env, tmp_path):
    from outbox.relay import relay_drain
    from outbox.tasks import relay_drain_task

    # given a worker in the middle of a large drain (batches of 100 with a pause after each ack,
    # and the default 60 s lease)
    topic = kafka_topics["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=40, per_key=100)
    env = dict(subprocess_env, OUTBOX_BATCH_SIZE="100", OUTBOX_FAULT_PAUSE_AFTER_SEND="0.5", OUTBOX_CLAIM_TTL="60")
    worker = celery_worker_managed(env=env, log_path=tmp_path / "worker.log")
    worker.start(timeout=60)
    relay_drain_task.delay()
    assert _wait_for(lambda: OutboxEvent.objects.filter(status="published").count() >= 300, 60), worker.log_tail(40)
    # when it is stopped with SIGTERM (Celery's warm shutdown), by a supervisor that SIGKILLs
    # it after a grace period of 9 s: shorter than its drain's 10 s budget, so the drain must
    # stop early (it takes 1.6 s on a quiet machine; the rest is room for a busy one)
    published_at_sigterm = OutboxEvent.objects.filter(status="published").count()
    sigterm_at = time.monotonic()
    assert worker.stop(timeout=9) == 0, worker.log_tail(40)  # -9 had the grace period run out
    stopped_at = time.monotonic()
    print(f"worker exited {stopped_at - sigterm_at:.2f} s after SIGTERM")
    # then it left no claim behind: what was acknowledged is marked, the rest released
    assert not OutboxEvent.objects.filter(status="pending", claim_token__isnull=False).exists()
    published_by_worker = OutboxEvent.objects.filter(status="published").count()
    assert 300 <= published_by_worker < 4000
    # and the drain stopped at SIGTERM: at most the batch being written back and the two in
    # flight were published after it (a drain that ran on to its budget publishes 200 a second)
    assert published_by_worker <= published_at_sigterm + 300, (published_at_sigterm, published_by_worker)
    # and a second relay takes the oldest pending rows (those the worker held) on its first claim
    oldest_pending = list(
        OutboxEvent.objects.filter(status="pending").order_by("seq").values_list("seq", flat=True)[:100]
    )
    result = relay_drain(max_batches=1, batch_size=100)
    assert result.published == 100
    print(f"released keys published {time.monotonic() - stopped_at:.2f} s after the worker stopped")
    assert not OutboxEvent.objects.filter(seq__in=oldest_pending).exclude(status="published").exists()
    # and everything is published once, in per-key order
    while OutboxEvent.objects.filter(status="pending").exists():
        relay_drain(time_budget_s=5)
    records = kafka_read_all(topic, timeout_s=30)
    assert len({r.headers["event_id"] for r in records}) == 4000
    assert all(seen == list(range(100)) for seen in _first_seen_by_key(records).values())
