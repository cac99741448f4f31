"""The replication policy of the topics, worked out from the settings (no broker needed)."""

from __future__ import annotations

import pytest

from outbox.topics import TopicMismatch, topic_policy


@pytest.mark.parametrize("brokers,factor,min_isr", [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_unset_settings_give_min_3_brokers_and_2_in_sync_when_the_factor_is_3(settings, brokers, factor, min_isr):
    settings.KAFKA_REPLICATION_FACTOR = None
    settings.KAFKA_MIN_INSYNC_REPLICAS = None
    policy = topic_policy(brokers=brokers)
    assert (policy.replication_factor, policy.min_insync_replicas) == (factor, min_isr)
    assert policy.configs() == {"min.insync.replicas": str(min_isr), "unclean.leader.election.enable": "false"}


def test_the_settings_win_over_the_cluster_size(settings):
    settings.KAFKA_REPLICATION_FACTOR = 2
    settings.KAFKA_MIN_INSYNC_REPLICAS = 2
    settings.KAFKA_TOPIC_PARTITIONS = 6
    policy = topic_policy(brokers=5)
    assert (policy.partitions, policy.replication_factor, policy.min_insync_replicas) == (6, 2, 2)


def test_a_mismatch_reads_as_a_sentence():
    mismatch = TopicMismatch("orders", "min.insync.replicas", "2", "1")
    assert str(mismatch) == "orders: min.insync.replicas is 1, expected 2"
