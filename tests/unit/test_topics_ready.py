"""`ensure_topics` returns once the topics it created are usable (a leader for every partition)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from kafka import KafkaAdminClient
from kafka.errors import KafkaConnectionError

import outbox.topics
from outbox.topics import TopicsNotReady, topic_names, topics_ensure


class AdminOfAClusterSlowToApplyCreations:
    """An admin client whose describes show the created topics without leaders `unled_describes`
    times, then led (None: never)."""

    def __init__(self, unled_describes: int | None, *, failed_describes: int = 0, existing: bool = False) -> None:
        self.unled_describes = unled_describes
        self.failed_describes = failed_describes
        self.created: list[str] = topic_names() if existing else []
        self.describes = 0

    def describe_cluster(self) -> dict:
        return {"brokers": [{"node_id": 1}]}

    def list_topics(self) -> list[str]:
        return list(self.created)

    def create_topics(self, topics: list) -> None:
        self.created = [topic.name for topic in topics]

    # kafka-python's own wait, over this admin's answers.
    wait_for_topics = KafkaAdminClient.wait_for_topics
    _topic_not_ready_reason = staticmethod(KafkaAdminClient._topic_not_ready_reason)  # type: ignore[attr-defined]  # private, not in the stubs

    def describe_topics(self, topics: list[str]) -> list[dict]:
        self.describes += 1
        if self.describes <= self.failed_describes:
            raise KafkaConnectionError("the broker went away")
        led = self.unled_describes is not None and self.describes > self.unled_describes
        partitions = [{"partition_index": n, "leader_id": 1 if led else -1, "replica_nodes": [1]} for n in range(3)]
        return [{"name": name, "error_code": 0, "partitions": partitions} for name in topics if name in self.created]

    def describe_configs(self, resources: list, config_filter: str) -> dict:
        return {"topic": {}}

    def close(self) -> None:
        pass


def test_topics_ensure_returns_once_every_created_partition_has_a_leader(monkeypatch):
    admin = AdminOfAClusterSlowToApplyCreations(unled_describes=3)
    monkeypatch.setattr(outbox.topics, "admin_client", lambda: admin)
    report = topics_ensure()
    assert report.created == topic_names()
    assert admin.describes == 4  # three answers without leaders, then the one with


def test_topics_that_never_get_a_leader_fail_ensure_topics_with_their_names(monkeypatch):
    admin = AdminOfAClusterSlowToApplyCreations(unled_describes=None)
    monkeypatch.setattr(outbox.topics, "admin_client", lambda: admin)
    monkeypatch.setattr(outbox.topics, "TOPICS_READY_TIMEOUT_S", 0.5)
    with pytest.raises(TopicsNotReady):
        topics_ensure()
    with pytest.raises(CommandError, match=topic_names()[0]):
        call_command("ensure_topics")


def test_a_describe_that_fails_on_the_way_is_asked_again(monkeypatch):
    admin = AdminOfAClusterSlowToApplyCreations(unled_describes=0, failed_describes=2)
    monkeypatch.setattr(outbox.topics, "admin_client", lambda: admin)
    assert topics_ensure().created == topic_names()
    assert admin.describes == 3


def test_existing_topics_without_leaders_yet_are_waited_for_too(monkeypatch):
    # given: topics created by a run that stopped at TopicsNotReady, still without leaders
    admin = AdminOfAClusterSlowToApplyCreations(unled_describes=3, existing=True)
    monkeypatch.setattr(outbox.topics, "admin_client", lambda: admin)
    # when
    report = topics_ensure()
    # then: three answers without leaders, the one with, then the policy check's own describe
    assert (report.created, report.existing) == ([], topic_names())
    assert admin.describes == 5
