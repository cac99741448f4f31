"""The observer functions move the samples Prometheus scrapes (process registry, one process)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from kafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY

from commerce.observability import metrics

TOPIC = "metrics-test-topic"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_published_row_counts_and_observes_its_commit_to_ack_latency():
    # given
    acked_at = timezone.now()
    before_count = sample("outbox_events_published_total", topic=TOPIC)
    before_le_2_5 = sample("outbox_commit_to_ack_seconds_bucket", topic=TOPIC, le="2.5")
    before_le_1 = sample("outbox_commit_to_ack_seconds_bucket", topic=TOPIC, le="1.0")
    before_sum = sample("outbox_commit_to_ack_seconds_sum", topic=TOPIC)
    # when: the row committed 2 s before its ack (ISO text, as the relay's rows carry it)
    metrics.relay_published_observed(
        topic=TOPIC, occurred_at=(acked_at - timedelta(seconds=2)).isoformat(), acked_at=acked_at
    )
    # then
    assert sample("outbox_events_published_total", topic=TOPIC) == before_count + 1
    assert sample("outbox_commit_to_ack_seconds_bucket", topic=TOPIC, le="2.5") == before_le_2_5 + 1
    assert sample("outbox_commit_to_ack_seconds_bucket", topic=TOPIC, le="1.0") == before_le_1
    assert sample("outbox_commit_to_ack_seconds_sum", topic=TOPIC) == pytest.approx(before_sum + 2.0)


def test_a_failed_send_counts_as_failed_and_retried_by_error_kind():
    before_failed = sample("outbox_send_failures_total", topic=TOPIC, error="KafkaTimeoutError")
    before_retried = sample("outbox_send_retries_total", topic=TOPIC, error="KafkaTimeoutError")
    before_dead = sample("outbox_events_dead_total", topic=TOPIC, error="KafkaTimeoutError")

    metrics.relay_failed_observed(topic=TOPIC, error=KafkaTimeoutError("no ack"), dead=False)

    assert sample("outbox_send_failures_total", topic=TOPIC, error="KafkaTimeoutError") == before_failed + 1
    assert sample("outbox_send_retries_total", topic=TOPIC, error="KafkaTimeoutError") == before_retried + 1
    assert sample("outbox_events_dead_total", topic=TOPIC, error="KafkaTimeoutError") == before_dead


def test_a_dead_row_counts_as_failed_and_dead_with_the_kind_from_last_error_text():
    kind = "MessageSizeTooLargeError"
    before_failed = sample("outbox_send_failures_total", topic=TOPIC, error=kind)
    before_dead = sample("outbox_events_dead_total", topic=TOPIC, error=kind)
    before_retried = sample("outbox_send_retries_total", topic=TOPIC, error=kind)

    metrics.relay_failed_observed(topic=TOPIC, error=f"{kind}: the message is 2000000 bytes", dead=True)

    assert sample("outbox_send_failures_total", topic=TOPIC, error=kind) == before_failed + 1
    assert sample("outbox_events_dead_total", topic=TOPIC, error=kind) == before_dead + 1
    assert sample("outbox_send_retries_total", topic=TOPIC, error=kind) == before_retried


def test_error_kind_is_bounded():
    assert metrics.error_kind(ValueError("x")) == "ValueError"
    assert metrics.error_kind("KafkaError: not acknowledged before the deadline") == "KafkaError"
    assert metrics.error_kind("payload.total: 'abc' is not a decimal") == "unknown"
    assert metrics.error_kind(None) == "unknown"


def test_a_relay_batch_observes_its_size_and_duration():
    before_count = sample("outbox_relay_batch_size_count")
    before_le_500 = sample("outbox_relay_batch_size_bucket", le="500.0")
    before_le_250 = sample("outbox_relay_batch_size_bucket", le="250.0")
    before_seconds = sample("outbox_relay_batch_duration_seconds_sum")

    metrics.relay_batch_observed(size=300, seconds=0.2)

    assert sample("outbox_relay_batch_size_count") == before_count + 1
    assert sample("outbox_relay_batch_size_bucket", le="500.0") == before_le_500 + 1
    assert sample("outbox_relay_batch_size_bucket", le="250.0") == before_le_250
    assert sample("outbox_relay_batch_duration_seconds_sum") == pytest.approx(before_seconds + 0.2)


def test_a_finished_drain_sets_the_relay_heartbeat():
    metrics.relay_drain_observed(at=1_700_000_000.0)
    assert sample("outbox_relay_last_drain_timestamp_seconds") == 1_700_000_000.0


def test_consumer_counts_applied_duplicates_and_dead_letters_per_topic():
    before = {
        name: sample(name, topic=TOPIC)
        for name in ("backoffice_records_applied_total", "backoffice_records_duplicate_total")
    }
    before_dead = sample("backoffice_records_dead_lettered_total", topic=TOPIC, error="ContractViolation")

    metrics.consumer_records_observed(topic=TOPIC, applied=5, duplicates=2)
    metrics.consumer_records_observed(topic=TOPIC, dead_lettered=1, error="ContractViolation: payload.total is missing")

    assert sample("backoffice_records_applied_total", topic=TOPIC) == before["backoffice_records_applied_total"] + 5
    assert sample("backoffice_records_duplicate_total", topic=TOPIC) == (
        before["backoffice_records_duplicate_total"] + 2
    )
    assert sample("backoffice_records_dead_lettered_total", topic=TOPIC, error="ContractViolation") == (before_dead + 1)


def test_consumer_batch_and_commit_to_projection_latency_are_observed():
    applied_at = timezone.now()
    before_batches = sample("backoffice_batch_apply_duration_seconds_count")
    before_latency = sample("backoffice_commit_to_projection_seconds_sum", topic=TOPIC)
    before_le_05 = sample("backoffice_commit_to_projection_seconds_bucket", topic=TOPIC, le="0.5")

    metrics.consumer_batch_observed(seconds=0.05)
    metrics.consumer_applied_latency_observed(
        topic=TOPIC, occurred_at=applied_at - timedelta(seconds=0.3), applied_at=applied_at
    )

    assert sample("backoffice_batch_apply_duration_seconds_count") == before_batches + 1
    assert sample("backoffice_commit_to_projection_seconds_sum", topic=TOPIC) == pytest.approx(before_latency + 0.3)
    assert sample("backoffice_commit_to_projection_seconds_bucket", topic=TOPIC, le="0.5") == before_le_05 + 1


def test_a_producer_clock_ahead_gives_zero_latency_not_a_negative_one():
    applied_at = timezone.now()
    before = sample("backoffice_commit_to_projection_seconds_sum", topic=TOPIC)
    metrics.consumer_applied_latency_observed(
        topic=TOPIC, occurred_at=applied_at + timedelta(seconds=5), applied_at=applied_at
    )
    assert sample("backoffice_commit_to_projection_seconds_sum", topic=TOPIC) == before


def test_consumer_lag_is_set_per_partition_and_forgotten_on_revoke():
    metrics.consumer_lag_observed(topic=TOPIC, partition=0, lag=42)
    metrics.consumer_lag_observed(topic=TOPIC, partition=1, lag=7)
    assert REGISTRY.get_sample_value("backoffice_consumer_lag_records", {"topic": TOPIC, "partition": "0"}) == 42
    assert REGISTRY.get_sample_value("backoffice_consumer_lag_records", {"topic": TOPIC, "partition": "1"}) == 7

    metrics.consumer_partitions_revoked(partitions=[(TOPIC, 0), (TOPIC, 9)])

    assert REGISTRY.get_sample_value("backoffice_consumer_lag_records", {"topic": TOPIC, "partition": "0"}) is None
    assert REGISTRY.get_sample_value("backoffice_consumer_lag_records", {"topic": TOPIC, "partition": "1"}) == 7


def test_a_poll_sets_the_consumer_heartbeat():
    metrics.consumer_poll_observed(at=1_700_000_123.0)
    assert sample("backoffice_consumer_last_poll_timestamp_seconds") == 1_700_000_123.0


def test_a_published_batch_counts_per_topic_and_observes_each_rows_latency():
    acked_at = timezone.now()
    other = TOPIC + "-other"
    before = {t: sample("outbox_events_published_total", topic=t) for t in (TOPIC, other)}
    before_count = {t: sample("outbox_commit_to_ack_seconds_count", topic=t) for t in (TOPIC, other)}
    before_sum = sample("outbox_commit_to_ack_seconds_sum", topic=TOPIC)
    rows: list[tuple[str, datetime | str]] = [
        (TOPIC, (acked_at - timedelta(seconds=1)).isoformat()),
        (other, acked_at - timedelta(seconds=3)),
        (TOPIC, (acked_at - timedelta(seconds=2)).isoformat().replace("+00:00", "Z")),
    ]

    metrics.relay_published_batch_observed(rows=rows, acked_at=acked_at)

    assert sample("outbox_events_published_total", topic=TOPIC) == before[TOPIC] + 2
    assert sample("outbox_events_published_total", topic=other) == before[other] + 1
    assert sample("outbox_commit_to_ack_seconds_count", topic=TOPIC) == before_count[TOPIC] + 2
    assert sample("outbox_commit_to_ack_seconds_count", topic=other) == before_count[other] + 1
    assert sample("outbox_commit_to_ack_seconds_sum", topic=TOPIC) == pytest.approx(before_sum + 3.0)


def test_a_batchs_commit_to_projection_latencies_are_observed_per_topic():
    applied_at = timezone.now()
    before_count = sample("backoffice_commit_to_projection_seconds_count", topic=TOPIC)
    before_sum = sample("backoffice_commit_to_projection_seconds_sum", topic=TOPIC)

    metrics.consumer_applied_batch_latency_observed(
        rows=[(TOPIC, applied_at - timedelta(seconds=0.5)), (TOPIC, applied_at - timedelta(seconds=1.5))],
        applied_at=applied_at,
    )

    assert sample("backoffice_commit_to_projection_seconds_count", topic=TOPIC) == before_count + 2
    assert sample("backoffice_commit_to_projection_seconds_sum", topic=TOPIC) == pytest.approx(before_sum + 2.0)
