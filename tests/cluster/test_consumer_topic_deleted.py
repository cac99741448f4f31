"""The back office consumer on a cluster that does not auto-create topics: a topic deleted under it
(`make chaos`'s topic_recreate on KAFKA_BROKERS=3 killed consume_events this way)."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient

from backoffice.consumer import EventConsumer
from tests.backoffice.stream import produce, stream_make
from tests.support.kafka import KafkaCluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_a_topic_deleted_under_the_consumer_leaves_its_lag_unknown_and_the_loop_running(
    cluster: KafkaCluster, cluster_topics: dict[str, str]
):
    # given a consumer assigned both topics, caught up, reporting its lag every 0.2 s
    produce(stream_make(events=60, seed=3)[0], cluster_topics)
    consumer = EventConsumer(
        topics=list(cluster_topics.values()), group_id=f"g-{uuid.uuid4().hex[:6]}", progress_every_s=0.2
    )
    lines: list[str] = []
    try:
        consumer.run(until_idle_s=3, on_progress=lines.append)
        assert len(consumer.consumer.assignment()) == 6
        assert consumer.lag() == 0
        # when one topic is deleted (the cluster does not create it again on the consumer's
        # metadata requests: its partitions vanish from the consumer's metadata before the group
        # rebalances them away)
        deleted = cluster_topics["catalog-events"]
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_list)
        try:
            admin.delete_topics([deleted])
            deadline = time.monotonic() + 60
            while deleted in admin.list_topics():
                assert time.monotonic() < deadline, "topic not deleted"
                time.sleep(0.2)
        finally:
            admin.close()
        # then, once its metadata has dropped the topic (what its 5 s refresh does; here at once,
        # before any poll lets the group rebalance), its lag is unknown rather than an exception
        # (kafka-python's end_offsets raised KeyError for the vanished partitions), and the loop
        # keeps running through the rebalance
        # (a broker other than the one that answered list_topics may still list it for a moment)
        deadline = time.monotonic() + 30
        while deleted in consumer.consumer.topics():
            assert time.monotonic() < deadline, "the consumer's metadata still lists the deleted topic"
            time.sleep(0.2)
        assert len(consumer.consumer.assignment()) == 6
        assert consumer.lag() is None
        consumer.run(until_idle_s=12, on_progress=lines.append)
        assert {tp.topic for tp in consumer.consumer.assignment()} <= {cluster_topics["order-events"]}
        assert lines
        assert all("lag" in line for line in lines)
    finally:
        consumer.close()
