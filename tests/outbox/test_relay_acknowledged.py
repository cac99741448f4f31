"""The acknowledgement of a drain's last batch after an abort: its producer was dropped, and no
new one is made just to flush it (against a broker that just failed, that is a bootstrap of up
to max_block_ms, 5 s, added to every drain of an outage)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, cast

import pytest
from kafka.errors import IllegalStateError, KafkaTimeoutError

from outbox.kafka import DeliveryFuture
from outbox.relay import send as send_module
from outbox.relay.rows import NotSent
from outbox.relay.send import SentBatch, acknowledged


class _Answered:
    """A delivery future the dropped producer already failed (kafka-python's close(0) fails the
    records it still held)."""

    is_done = True
    value = None

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception

    def get(self, timeout: float | None = None) -> Any:
        raise self.exception


def _no_producer_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []

    def producer_get() -> None:
        made.append("producer")
        pytest.fail("a producer was made to flush a batch whose producer was dropped")

    monkeypatch.setattr(send_module, "producer_get", producer_get)
    return made


def _batch() -> SentBatch:
    dropped = IllegalStateError("Producer is closed forcefully.")
    futures = cast(dict[int, DeliveryFuture], {1: _Answered(dropped), 2: _Answered(dropped)})
    return SentBatch(uuid.uuid4(), [], futures, {}, time.monotonic() + 5)


def test_the_last_batch_after_an_earlier_abort_is_not_flushed_by_a_new_producer(monkeypatch):
    made = _no_producer_made(monkeypatch)
    outcomes, aborted = acknowledged(_batch(), flush=True, after_abort=True)
    assert made == []
    assert all(isinstance(outcome, NotSent) for outcome in outcomes.values())
    assert not aborted


def test_the_last_batch_of_a_drain_whose_send_was_aborted_is_not_flushed_by_a_new_producer(monkeypatch):
    made = _no_producer_made(monkeypatch)
    abort = threading.Event()
    abort.set()  # an earlier batch failed while this one was being sent
    acknowledged(_batch(), flush=True, abort=abort)
    assert made == []


class _Unanswered:
    """A delivery future the broker never answered (a partition short of in-sync replicas: the
    producer retries inside until its delivery timeout, past the batch's deadline)."""

    is_done = False
    exception = None
    value = None

    def get(self, timeout: float | None = None) -> Any:
        raise KafkaTimeoutError("still waiting")


def test_a_row_not_acknowledged_by_its_deadline_failed_with_a_retriable_error():
    # (a retriable error never makes a row dead: a partial outage of the cluster must not)
    futures = cast(dict[int, DeliveryFuture], {1: _Unanswered()})
    outcomes, aborted = acknowledged(SentBatch(uuid.uuid4(), [], futures, {}, time.monotonic() - 1), flush=False)
    assert aborted
    assert isinstance(outcomes[1], KafkaTimeoutError)
    assert outcomes[1].retriable
