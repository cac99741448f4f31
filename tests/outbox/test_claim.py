"""The claim protocol on its own (no broker): per-key order, leases and the fenced write-back."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from kafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    TopicAuthorizationFailedError,
)
from kafka.producer.future import RecordMetadata
from kafka.structs import TopicPartition

from outbox.models import OutboxEvent
from outbox.relay import DrainResult, _write_back, claim_batch
from outbox.relay.rows import Outcome
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = pytest.mark.django_db


def _meta(offset: int) -> RecordMetadata:
    return RecordMetadata("t", 0, TopicPartition("t", 0), offset, 0, None, 0, 0, 0)


def test_a_key_with_an_older_row_in_backoff_is_not_claimed():
    # given key 1's oldest row is waiting for its retry
    outbox_rows_bulk(topic="t", keys=2, per_key=3)
    oldest_of_key_1 = OutboxEvent.objects.filter(key="1").earliest("seq")
    oldest_of_key_1.available_at = timezone.now() + timedelta(minutes=5)
    oldest_of_key_1.save()
    # when
    claimed = claim_batch(token=uuid.uuid4(), limit=100)
    # then only key 2 is taken, in order
    assert {row.key for row in claimed} == {"2"}
    assert [row.payload["sequence"] for row in claimed] == [0, 1, 2]


def test_a_key_under_another_relays_lease_is_not_claimed_even_its_later_rows():
    outbox_rows_bulk(topic="t", keys=2, per_key=2)
    first = claim_batch(token=uuid.uuid4(), limit=1)  # the oldest row: key 1, sequence 0
    second = claim_batch(token=uuid.uuid4(), limit=100)
    assert [(r.key, r.payload["sequence"]) for r in first] == [("1", 0)]
    assert sorted((r.key, r.payload["sequence"]) for r in second) == [("2", 0), ("2", 1)]


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_mark():
    outbox_rows_bulk(topic="t", keys=1, per_key=2)
    old_token = uuid.uuid4()
    old_rows = claim_batch(token=old_token, limit=100)
    OutboxEvent.objects.update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    new_token = uuid.uuid4()
    # (an abandoned row ends a batch: the new owner takes them one claim at a time, and counts
    # the abandoned lease as an attempt)
    assert len(claim_batch(token=new_token, limit=100)) == 1
    assert len(claim_batch(token=new_token, limit=100, in_flight=new_token)) == 1
    assert list(OutboxEvent.objects.values_list("attempts", flat=True)) == [1, 1]
    # when the old owner writes back
    result = DrainResult()
    _write_back(
        token=old_token, rows=old_rows, outcomes={r.seq: _meta(i) for i, r in enumerate(old_rows)}, result=result
    )
    # then nothing changed: the rows belong to the new owner
    assert result.fenced_out == 2
    assert not OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED).exists()
    assert set(OutboxEvent.objects.values_list("claim_token", flat=True)) == {new_token}


def test_a_failed_row_holds_back_the_rest_of_its_key_and_gets_backoff():
    outbox_rows_bulk(topic="t", keys=2, per_key=3)
    token = uuid.uuid4()
    rows = claim_batch(token=token, limit=100)
    failing = next(r for r in rows if r.key == "1" and r.payload["sequence"] == 1)
    outcomes: dict[int, Outcome] = {r.seq: _meta(r.seq) for r in rows}
    outcomes[failing.seq] = KafkaTimeoutError("broker away")
    result = DrainResult()
    _write_back(token=token, rows=rows, outcomes=outcomes, result=result)
    statuses = {(r.key, r.payload["sequence"]): (r.status, r.attempts) for r in OutboxEvent.objects.all()}
    assert statuses[("1", 0)] == ("published", 0)
    assert statuses[("1", 1)] == ("pending", 1)
    assert statuses[("1", 2)] == ("pending", 0)
    assert all(statuses[("2", n)] == ("published", 0) for n in range(3))
    failed = OutboxEvent.objects.get(seq=failing.seq)
    assert failed.available_at > timezone.now()
    assert "broker away" in failed.last_error

    # and the key stays blocked until the failed row is due again
    assert claim_batch(token=uuid.uuid4(), limit=100) == []


def test_every_published_row_gets_its_own_partition_and_offset():
    # given rows of three keys, interleaved, whose newest row fails: the write back groups the
    # acknowledged rows by key, so they are no longer in seq order
    outbox_rows_bulk(topic="t", keys=3, per_key=3)
    token = uuid.uuid4()
    rows = claim_batch(token=token, limit=100)
    outcomes: dict[int, Outcome] = {
        r.seq: RecordMetadata("t", r.seq % 3, TopicPartition("t", r.seq % 3), 1000 + r.seq, 0, None, 0, 0, 0)
        for r in rows
    }
    outcomes[rows[-1].seq] = KafkaTimeoutError("broker away")
    _write_back(token=token, rows=rows, outcomes=outcomes, result=DrainResult())
    published = list(OutboxEvent.objects.filter(status="published"))
    assert len(published) == 8
    assert [(r.kafka_partition, r.kafka_offset) for r in published] == [(r.seq % 3, 1000 + r.seq) for r in published]


def test_a_permanent_error_marks_the_row_dead_and_by_default_does_not_block_its_key(settings):
    settings.OUTBOX_DEAD_BLOCKS_KEY = False
    outbox_rows_bulk(topic="t", keys=1, per_key=2)
    token = uuid.uuid4()
    rows = claim_batch(token=token, limit=100)
    outcomes: dict[int, Outcome] = {rows[0].seq: MessageSizeTooLargeError("too big"), rows[1].seq: _meta(1)}
    _write_back(token=token, rows=rows, outcomes=outcomes, result=DrainResult())
    assert list(OutboxEvent.objects.order_by("seq").values_list("status", flat=True)) == ["dead", "published"]


def test_dead_rows_block_their_key_when_the_setting_says_so(settings):
    settings.OUTBOX_DEAD_BLOCKS_KEY = True
    outbox_rows_bulk(topic="t", keys=1, per_key=2)
    OutboxEvent.objects.filter(seq=OutboxEvent.objects.earliest("seq").seq).update(status="dead")
    assert claim_batch(token=uuid.uuid4(), limit=100) == []
    settings.OUTBOX_DEAD_BLOCKS_KEY = False
    assert len(claim_batch(token=uuid.uuid4(), limit=100)) == 1


def _fail_each_claim(times: int, error: Exception) -> OutboxEvent:
    for _ in range(times):
        OutboxEvent.objects.update(available_at=timezone.now())
        token = uuid.uuid4()
        rows = claim_batch(token=token, limit=10)
        _write_back(token=token, rows=rows, outcomes={rows[0].seq: error}, result=DrainResult())
    return OutboxEvent.objects.get()


def test_too_many_attempts_mark_the_row_dead(settings):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    outbox_rows_bulk(topic="t", keys=1, per_key=1)
    row = _fail_each_claim(2, TopicAuthorizationFailedError("x"))
    assert row.status == "dead"
    assert row.attempts == 2


def test_retriable_failures_count_but_never_mark_the_row_dead(settings):
    # (the broker away, a timeout, replicas missing: the cluster's fault, however long it lasts)
    settings.OUTBOX_MAX_ATTEMPTS = 2
    outbox_rows_bulk(topic="t", keys=1, per_key=1)
    row = _fail_each_claim(4, KafkaTimeoutError("x"))
    assert (row.status, row.attempts) == ("pending", 4)
    row = _fail_each_claim(1, NotEnoughReplicasError("x"))
    assert (row.status, row.attempts) == ("pending", 5)
    # and a failure that is not retriable, once the attempts are spent, does
    row = _fail_each_claim(1, TopicAuthorizationFailedError("x"))
    assert (row.status, row.attempts) == ("dead", 6)


def test_rows_of_this_drains_in_flight_batch_do_not_hold_their_key_back():
    # given a key whose two oldest rows are claimed by the batch this drain is sending
    outbox_rows_bulk(topic="t", keys=1, per_key=4)
    in_flight = uuid.uuid4()
    assert [r.payload["sequence"] for r in claim_batch(token=in_flight, limit=2)] == [0, 1]
    # then another relay may not take the key's later rows, but this drain's next batch may
    assert claim_batch(token=uuid.uuid4(), limit=10) == []
    next_batch = claim_batch(token=uuid.uuid4(), limit=10, in_flight=in_flight)
    assert [r.payload["sequence"] for r in next_batch] == [2, 3]


def test_a_key_that_failed_in_one_batch_is_not_marked_in_the_next_one_already_sent():
    # given two batches in flight: sequence 0 of keys 1 and 2, then sequence 1 of both
    outbox_rows_bulk(topic="t", keys=2, per_key=2)
    first_token, second_token = uuid.uuid4(), uuid.uuid4()
    first = claim_batch(token=first_token, limit=2)
    second = claim_batch(token=second_token, limit=2, in_flight=first_token)
    assert [(r.key, r.payload["sequence"]) for r in first + second] == [("1", 0), ("2", 0), ("1", 1), ("2", 1)]
    # when key 1's row fails in the first batch and everything of the second is acknowledged
    blocked_keys: set[str] = set()
    result = DrainResult()
    outcomes: dict[int, Outcome] = {r.seq: _meta(r.seq) for r in first}
    outcomes[first[0].seq] = KafkaTimeoutError("broker away")
    _write_back(token=first_token, rows=first, outcomes=outcomes, result=result, blocked_keys=blocked_keys)
    _write_back(
        token=second_token,
        rows=second,
        outcomes={r.seq: _meta(r.seq) for r in second},
        result=result,
        blocked_keys=blocked_keys,
    )
    # then key 1's later row is released, unmarked, to be sent again after the failed one
    state = {(r.key, r.payload["sequence"]): (r.status, r.attempts, r.claim_token) for r in OutboxEvent.objects.all()}
    assert state[("1", 0)] == ("pending", 1, None)
    assert state[("1", 1)] == ("pending", 0, None)
    assert state[("2", 0)][0] == state[("2", 1)][0] == "published"
    assert (result.published, result.failed, result.released) == (2, 1, 1)
