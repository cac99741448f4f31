"""The consumer's offset commits against the real broker: sent after each batch's transaction
without waiting for the broker's answer, read at the next commit; one that failed is sent
again, and closing commits and waits (backoffice/consumer.py, `offsets_commit`)."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError
from kafka.future import Future

from backoffice.consumer import EventConsumer
from backoffice.models import InboxEntry
from tests.backoffice.stream import produce, view

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _committed_and_ends(group: str, topic: str) -> tuple[dict[TopicPartition, int | None], dict[TopicPartition, int]]:
    """The group's committed offset of each partition of the topic, and the partitions' ends."""
    checker = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group_id=group,
        enable_auto_commit=False,
        **settings.KAFKA_SECURITY,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        return {tp: checker.committed(tp) for tp in partitions}, checker.end_offsets(partitions)
    finally:
        checker.close()


def test_each_batchs_offsets_reach_the_broker_without_waiting_for_its_answer(kafka_topics):
    # given 30 records over the catalog topic's partitions
    produce([view(str(n)) for n in range(30)], kafka_topics)
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(topics=list(kafka_topics.values()), group_id=group, batch_size=7)
    try:
        # when the consumer applies them in batches, and has not closed
        consumer.run(until_idle_s=2.0)
        # then the group's committed offsets are the ends of the partitions
        committed, ends = _committed_and_ends(group, kafka_topics["catalog-events"])
        assert committed == ends
        assert InboxEntry.objects.filter(consumer_group=group).count() == 30
    finally:
        consumer.close()


@pytest.mark.parametrize(
    "answer",
    [
        # the commit failed (the coordinator away)
        pytest.param(lambda: Future().failure(KafkaConnectionError("coordinator away")), id="failed"),
        # the coordinator unknown: kafka-python returns the lookup's future, which succeeds with
        # the coordinator's id, and sends the commit later, unwatched (here: never)
        pytest.param(lambda: Future().success(1), id="still-waiting-for-the-coordinator"),
    ],
)
def test_an_offset_commit_not_confirmed_is_kept_and_committed_by_the_next_one(kafka_topics, monkeypatch, answer):
    # given a consumer whose commits sent without waiting are never confirmed
    produce([view(str(n)) for n in range(20)], kafka_topics)
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(topics=list(kafka_topics.values()), group_id=group, batch_size=5)
    monkeypatch.setattr(consumer.consumer, "commit_async", lambda offsets: answer())
    try:
        # when it applies the records
        consumer.run(until_idle_s=2.0)
        # then nothing is committed, and the offsets are kept for the next commit
        committed, _ = _committed_and_ends(group, kafka_topics["catalog-events"])
        assert set(committed.values()) == {None}
        assert consumer._applied_offsets
    finally:
        # and closing commits them, waiting for the broker
        consumer.close()
    committed, ends = _committed_and_ends(group, kafka_topics["catalog-events"])
    assert committed == ends
    assert sum(ends.values()) == 20
    assert InboxEntry.objects.filter(consumer_group=group).count() == 20
