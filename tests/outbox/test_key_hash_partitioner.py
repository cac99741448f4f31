"""The relay's partitioner puts every key where kafka-python's (and Java's, and librdkafka's
murmur2_random) default puts it: a key's order holds across clients and across a deploy."""

from __future__ import annotations

import random
from collections.abc import Collection

import pytest
from kafka.partitioner.default import DefaultPartitioner

from outbox.kafka import KeyHashPartitioner, producer_config


class Cluster:
    """What a partitioner reads of kafka-python's ClusterMetadata."""

    def __init__(self, partitions: dict[str, Collection[int]]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> Collection[int] | None:
        return self.partitions.get(topic)

    def available_partitions_for_topic(self, topic: str) -> Collection[int]:
        return self.partitions.get(topic, ())


def test_every_key_goes_where_the_default_partitioner_puts_it():
    rng = random.Random(15)
    ours, theirs = KeyHashPartitioner(), DefaultPartitioner()
    # The metadata's partitions come in no given order (a set): both sort them.
    cluster = Cluster({"one": [0], "three": [2, 0, 1], "seven": list(range(6, -1, -1)), "sparse": [9, 1, 5, 3]})
    keys = [str(n).encode() for n in range(2000)] + [rng.randbytes(rng.randint(0, 40)) for _ in range(2000)]
    for _ in range(2):  # the second pass answers from the cache
        for key in keys:
            for topic in cluster.topics():
                assert ours.partition(topic, None, key, None, None, cluster) == theirs.partition(
                    topic, None, key, None, None, cluster
                ), (topic, key)


def test_a_key_of_a_topic_the_metadata_does_not_know_is_refused_as_before():
    with pytest.raises(ValueError, match="not found"):
        KeyHashPartitioner().partition("missing", None, b"1", None, None, Cluster({"other": {0}}))


def test_a_record_without_a_key_gets_one_of_the_partitions():
    cluster = Cluster({"three": {0, 1, 2}})
    assert {KeyHashPartitioner().partition("three", None, None, None, None, cluster) for _ in range(200)} == {0, 1, 2}


def test_the_relays_producer_uses_it():
    assert isinstance(producer_config()["partitioner"], KeyHashPartitioner)
