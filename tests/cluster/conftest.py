"""Fixtures of the tests marked `cluster`: the local 3-node cluster, topics made on it by the
project's own `topics_ensure` (replication factor 3, min.insync.replicas 2), and the environment
of worker and consumer subprocesses pointed at it.

`make test` starts the cluster before these tests and stops it after them; run alone, the
session fixture starts it when it does not answer and stops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from outbox.kafka import producer_reset
from tests.support.kafka import KafkaCluster, kafka_topics_delete
from tests.support.processes import database_url_for_subprocess


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    cluster = KafkaCluster()
    started_here = not cluster.is_up()
    cluster.start()
    yield cluster
    if started_here:
        cluster.stop()


@pytest.fixture
def cluster(kafka_cluster: KafkaCluster, settings) -> Iterator[KafkaCluster]:
    """The cluster with every node running (a test that killed one left it to be restarted here),
    and this process's Kafka clients pointed at it."""
    kafka_cluster.start()
    settings.KAFKA_BOOTSTRAP_SERVERS = list(kafka_cluster.bootstrap_list)
    settings.KAFKA_REPLICATION_FACTOR = None
    settings.KAFKA_MIN_INSYNC_REPLICAS = None
    producer_reset()
    yield kafka_cluster
    producer_reset()


@pytest.fixture
def cluster_topics(cluster: KafkaCluster, settings) -> Iterator[dict[str, str]]:
    """Fresh topics of this test, created by `topics_ensure` on the cluster (RF 3, min ISR 2)."""
    from outbox.topics import topics_ensure

    suffix = uuid.uuid4().hex[:10]
    settings.KAFKA_TOPICS = {stream: f"cluster-{suffix}-{stream}" for stream in settings.KAFKA_TOPICS}
    settings.KAFKA_TOPIC_PARTITIONS = 3
    report = topics_ensure()
    assert (report.policy.replication_factor, report.policy.min_insync_replicas) == (3, 2)
    for name in report.created:
        cluster.wait_until(lambda name=name: len(cluster.leaders(name)) == 3, 30, f"leaders of {name}")
    yield dict(settings.KAFKA_TOPICS)
    kafka_topics_delete(cluster.bootstrap, report.created)


@pytest.fixture
def cluster_env(settings, cluster: KafkaCluster, cluster_topics: dict[str, str]) -> dict[str, str]:
    """Environment of a worker or consumer subprocess: the test database, the cluster, its topics."""
    return dict(
        os.environ,
        DATABASE_URL=database_url_for_subprocess(settings.DATABASES["default"]),
        KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap,
        KAFKA_TOPIC_CATALOG=cluster_topics["catalog-events"],
        KAFKA_TOPIC_ORDERS=cluster_topics["order-events"],
        DEBUG="1",
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONUNBUFFERED="1",
    )
