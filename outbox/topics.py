"""Topic administration: the event topics and their dead-letter topics, made for a cluster.

Every topic `topics_ensure` creates (the `.dlq` ones included) gets the replication factor
`KAFKA_REPLICATION_FACTOR` (unset: min(3, brokers in the cluster)), `min.insync.replicas`
`KAFKA_MIN_INSYNC_REPLICAS` (unset: 2 when the factor is 3 or more, else 1) and
`unclean.leader.election.enable=false`: with the producer's `acks=all`, an acknowledged record is
then on at least two brokers, and a replica that missed it can never become leader. A topic that
already exists is not changed: what differs from the above is reported (`TopicMismatch`), by
`ensure_topics`, `manage.py outbox status --topics` and the admin dashboard.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from django.conf import settings
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from outbox.kafka import admin_client

logger = logging.getLogger(__name__)


def topic_names() -> list[str]:
    names = list(settings.KAFKA_TOPICS.values())
    return names + [f"{name}.dlq" for name in names]


@dataclass(frozen=True)
class TopicPolicy:
    """What every topic of the project should have."""

    partitions: int
    replication_factor: int
    min_insync_replicas: int

    def configs(self) -> dict[str, str]:
        return {"min.insync.replicas": str(self.min_insync_replicas), "unclean.leader.election.enable": "false"}


@dataclass(frozen=True)
class TopicMismatch:
    topic: str
    setting: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.actual}, expected {self.expected}"


@dataclass
class TopicsReport:
    policy: TopicPolicy
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    mismatches: list[TopicMismatch] = field(default_factory=list)


def topic_policy(
    *,
    brokers: int,
    partitions: int | None = None,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> TopicPolicy:
    """The settings (or the given values) made concrete for a cluster of `brokers` brokers."""
    factor = replication_factor or settings.KAFKA_REPLICATION_FACTOR or min(3, max(brokers, 1))
    min_isr = min_insync_replicas or settings.KAFKA_MIN_INSYNC_REPLICAS or (2 if factor >= 3 else 1)
    return TopicPolicy(
        partitions=partitions or settings.KAFKA_TOPIC_PARTITIONS, replication_factor=factor, min_insync_replicas=min_isr
    )


def topics_ensure(
    *, partitions: int | None = None, replication_factor: int | None = None, min_insync_replicas: int | None = None
) -> TopicsReport:
    """Create the missing topics with the policy; report how the existing ones differ. Idempotent."""
    admin = admin_client()
    try:
        brokers = len(admin.describe_cluster()["brokers"])
        policy = topic_policy(
            brokers=brokers,
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
        )
        existing = set(admin.list_topics())
        report = TopicsReport(policy=policy)
        for name in topic_names():
            (report.existing if name in existing else report.created).append(name)
        if report.created:
            # Created meanwhile by someone else: checked below like any existing one.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(name, policy.partitions, policy.replication_factor, topic_configs=policy.configs())
                        for name in report.created
                    ]
                )
        # Existing topics too: one created by a run that stopped at TopicsNotReady, or by
        # another process a moment ago, is not usable before its leaders are elected either.
        topics_wait_for_leaders(admin, report.created + report.existing)
        if report.existing:
            report.mismatches = _mismatches(admin, report.existing, policy)
        for mismatch in report.mismatches:
            logger.warning(
                "topic differs from the configured policy",
                extra={
                    "topic": mismatch.topic,
                    "setting": mismatch.setting,
                    "expected": mismatch.expected,
                    "actual": mismatch.actual,
                },
            )
        return report
    finally:
        admin.close()


class TopicsNotReady(RuntimeError):
    """Topics that still lack a leader for some partition."""


TOPICS_READY_TIMEOUT_S = 30.0


def topics_wait_for_leaders(admin: KafkaAdminClient, names: list[str], *, timeout_s: float | None = None) -> None:
    """Return once every partition of `names` has a leader in the cluster's metadata.

    A created topic is in the controller's log when CreateTopics answers; the brokers apply it a
    moment later. Until then a producer is told the topic is unknown and a describe lists no
    partitions: `ensure_topics` (which `make run` runs before the relay starts) returns only
    once the topics are usable. kafka-python's `wait_for_topics` polls the describes (asking
    again when one fails); `TopicsNotReady` after `timeout_s` (default `TOPICS_READY_TIMEOUT_S`)."""
    timeout_s = TOPICS_READY_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        admin.wait_for_topics(names, timeout_ms=timeout_s * 1000)
    except KafkaTimeoutError as exc:
        raise TopicsNotReady(str(exc)) from exc


def topics_check(*, timeout_s: float | None = None) -> list[TopicMismatch]:
    """How the project's topics differ from the policy now (a missing topic is a mismatch too).

    `timeout_s` bounds the admin client's bootstrap and each request (a status page's)."""
    admin = admin_client(timeout_s=timeout_s)
    try:
        policy = topic_policy(brokers=len(admin.describe_cluster()["brokers"]))
        names = topic_names()
        existing = set(admin.list_topics())
        missing = [TopicMismatch(name, "exists", "yes", "no") for name in names if name not in existing]
        return missing + _mismatches(admin, [name for name in names if name in existing], policy)
    finally:
        admin.close()


def _mismatches(admin: KafkaAdminClient, names: list[str], policy: TopicPolicy) -> list[TopicMismatch]:
    if not names:
        return []
    found: list[TopicMismatch] = []
    for topic in admin.describe_topics(names):
        name = topic["name"]
        partitions = topic["partitions"]
        if len(partitions) != policy.partitions:
            found.append(TopicMismatch(name, "partitions", str(policy.partitions), str(len(partitions))))
        factors = sorted({len(p["replica_nodes"]) for p in partitions})
        if factors != [policy.replication_factor]:
            found.append(
                TopicMismatch(name, "replication factor", str(policy.replication_factor), ",".join(map(str, factors)))
            )
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs=policy.configs()) for name in names],
        config_filter="all",
    )
    for name in names:
        actual = {key: entry["value"] for key, entry in described["topic"].get(name, {}).items()}
        for key, expected in policy.configs().items():
            if actual.get(key) != expected:
                found.append(TopicMismatch(name, key, expected, str(actual.get(key))))
    return found


def topics_check_report(*, timeout_s: float | None = None) -> tuple[list[TopicMismatch], str | None]:
    """`topics_check()` for a status page: (mismatches, None), or ([], why Kafka could not tell)."""
    try:
        return topics_check(timeout_s=timeout_s), None
    except Exception as exc:  # noqa: BLE001 - shown to the operator instead of the check
        return [], f"Kafka unavailable: {type(exc).__name__}: {exc}"
