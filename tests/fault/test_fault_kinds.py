"""Which Kafka `make chaos` runs on and which faults it draws there (no services needed)."""

from __future__ import annotations

from tests.fault.campaign import fault_kinds, fault_schedule
from tests.support.kafka import (
    KafkaCluster,
    PrivateBroker,
    broker_kill_draw,
    campaign_kafka,
)


def test_a_cluster_campaign_draws_broker_kill_and_a_single_broker_one_does_not():
    # given the kinds of each topology
    single, cluster = fault_kinds(brokers=1), fault_kinds(brokers=3)
    # when the 20 faults of `make chaos SEED=7` are scheduled on the cluster
    schedule = fault_schedule(seed=7, faults=20, duration_s=625, kinds=cluster)
    # then every kind is drawn, broker_kill included, and the kills reach more than one node
    assert "broker_kill" not in single
    assert set(cluster) == set(single) | {"broker_kill"}
    assert {kind for _, kind in schedule} == set(cluster)
    kills = [broker_kill_draw(seed=7, moment=moment, brokers=3) for moment, kind in schedule if kind == "broker_kill"]
    assert len(kills) >= 2
    assert len(set(kills)) >= 2


def test_the_campaign_runs_on_the_cluster_its_environment_names(monkeypatch):
    # given KAFKA_BROKERS=3 and the ports of this machine's cluster
    monkeypatch.setenv("KAFKA_BROKERS", "3")
    monkeypatch.setenv("KAFKA_CLUSTER_BOOTSTRAP_SERVERS", "127.0.0.1:9492,127.0.0.1:9494,127.0.0.1:9496")
    monkeypatch.delenv("KAFKA_CLUSTER_HOME_DIR", raising=False)
    # when the campaign picks its Kafka
    kafka = campaign_kafka()
    # then it is those three nodes, with files apart from the cluster tests' var/kafka-cluster
    assert isinstance(kafka, KafkaCluster)
    assert kafka.brokers == 3
    assert kafka.bootstrap == "127.0.0.1:9492,127.0.0.1:9494,127.0.0.1:9496"
    assert kafka.env["KAFKA_HOME_DIR"].endswith("var/kafka-chaos-cluster")
    # and without KAFKA_BROKERS it is a single private broker
    monkeypatch.delenv("KAFKA_BROKERS")
    assert isinstance(campaign_kafka(), PrivateBroker)
