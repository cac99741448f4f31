"""Test helpers that talk to the real broker with kafka-python."""

from __future__ import annotations

import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _bootstrap() -> list[str]:
    return list(settings.KAFKA_BOOTSTRAP_SERVERS)


def kafka_is_up(bootstrap: list[str], timeout_s: float = 3.0) -> bool:
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **settings.KAFKA_SECURITY
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def kafka_ensure_broker() -> str:
    """Use the broker at KAFKA_BOOTSTRAP_SERVERS; start the project's local one if none answers."""
    bootstrap = _bootstrap()
    if not kafka_is_up(bootstrap):
        subprocess.run([str(PROJECT_DIR / "scripts" / "kafka-local"), "start"], check=True, env=dict(os.environ))
    deadline = time.monotonic() + 60
    while not kafka_is_up(bootstrap):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka at {bootstrap} does not answer")
        time.sleep(1)
    return ",".join(bootstrap)


def kafka_topics_create(bootstrap: str, names: list[str], *, partitions: int = 3, replication_factor: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), **settings.KAFKA_SECURITY)
    configs = {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"} if replication_factor >= 3 else {}
    try:
        admin.create_topics([NewTopic(name, partitions, replication_factor, topic_configs=configs) for name in names])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    _wait_for_leaders(bootstrap, names, partitions)


def _wait_for_leaders(bootstrap: str, names: list[str], partitions: int) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), **settings.KAFKA_SECURITY)
    try:
        deadline = time.monotonic() + 30
        for name in names:
            while True:
                found = consumer.partitions_for_topic(name)
                if found and len(found) == partitions:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {name} has no leaders after 30 s")
                consumer.topics()  # refreshes metadata
                time.sleep(0.2)
    finally:
        consumer.close()


def kafka_topics_delete(bootstrap: str, names: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), **settings.KAFKA_SECURITY)
    try:
        admin.delete_topics(names)
    except (UnknownTopicOrPartitionError, KafkaError):
        pass
    finally:
        admin.close()


@dataclass(frozen=True)
class ReadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def kafka_read_all(topic: str, *, expected: int | None = None, timeout_s: float = 30.0) -> list[ReadRecord]:
    """Every record of a topic, from the beginning, without a consumer group.

    Stops when `expected` records were read, or when the end offsets are reached (and, when
    `expected` is given but not reached, keeps polling until `timeout_s`).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=_bootstrap(), enable_auto_commit=False, group_id=None, **settings.KAFKA_SECURITY
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assignment)
        consumer.seek_to_beginning(*assignment)
        records: list[ReadRecord] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            for tp_records in batch.values():
                records.extend(
                    ReadRecord(r.topic, r.partition, r.offset, r.key, r.value, dict(r.headers)) for r in tp_records
                )
            if expected is not None and len(records) >= expected:
                break
            if expected is None and not batch:
                end = consumer.end_offsets(assignment)
                if all((consumer.position(tp) or 0) >= end[tp] for tp in assignment):  # None: not assigned
                    break
        return records
    finally:
        consumer.close()


class PrivateBroker:
    """A second real broker of the project's own (scripts/kafka-local on another port), for
    tests that stop and start Kafka without taking the shared one away from other tests."""

    def __init__(self, *, port: int = 19092) -> None:
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            KAFKA_HOME_DIR=str(PROJECT_DIR / "var" / f"kafka-private-{port}"),
        )

    def _run(self, action: str) -> None:
        # Longer than the script's own 120 s wait for readiness, which starts after the storage
        # is formatted: the script, not this timeout, says why a start failed.
        script = str(PROJECT_DIR / "scripts" / "kafka-local")
        try:
            subprocess.run([script, action], check=True, env=self.env, timeout=300)
        except subprocess.TimeoutExpired:
            if action != "stop":
                subprocess.run([script, "stop"], check=False, env=self.env, timeout=120)
            raise

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def topics_create(self, names: list[str]) -> None:
        kafka_topics_create(self.bootstrap, names)


CLUSTER_BOOTSTRAP_DEFAULT = "127.0.0.1:9700,127.0.0.1:9702,127.0.0.1:9704"


def java_string_hash(text: str) -> int:
    """Java's String.hashCode(), as Kafka applies it to a group id (32-bit, signed)."""
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class KafkaCluster:
    """The project's local 3-node KRaft cluster (`KAFKA_BROKERS=3 scripts/kafka-local`), for the
    tests marked `cluster`: its nodes are started, stopped and SIGKILLed one by one by id.

    Where it listens: KAFKA_CLUSTER_BOOTSTRAP_SERVERS (default 127.0.0.1:9700,9702,9704: the
    script's layout from the first port); its files: KAFKA_CLUSTER_HOME_DIR (default
    var/kafka-cluster).
    """

    def __init__(self, *, bootstrap: str | None = None, home: str | None = None, brokers: int = 3) -> None:
        self.bootstrap_list = (
            bootstrap or os.environ.get("KAFKA_CLUSTER_BOOTSTRAP_SERVERS") or CLUSTER_BOOTSTRAP_DEFAULT
        ).split(",")[:brokers]
        self.brokers = brokers
        host, port = self.bootstrap_list[0].rsplit(":", 1)
        self.sasl_bootstrap_list = [f"{host}:{int(port) + 2 * brokers + n}" for n in range(brokers)]
        self.env = dict(
            os.environ,
            KAFKA_BROKERS=str(brokers),
            KAFKA_BOOTSTRAP_SERVERS=",".join(self.bootstrap_list),
            KAFKA_HOME_DIR=home
            or os.environ.get("KAFKA_CLUSTER_HOME_DIR")
            or str(PROJECT_DIR / "var" / "kafka-cluster"),
        )

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_list)

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [str(PROJECT_DIR / "scripts" / "kafka-local"), *args],
            env=self.env,
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka-local {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout.strip()

    def is_up(self) -> bool:
        return kafka_is_up(self.bootstrap_list)

    def start(self, node: int | None = None) -> None:
        """Start every node (or one) and wait until it answers and is registered."""
        self._run("start", *([str(node)] if node else []))

    def stop(self, node: int | None = None) -> None:
        self._run("stop", *([str(node)] if node else []))

    def kill(self, node: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown."""
        self._run("kill", str(node))

    def running(self) -> bool:
        return (
            subprocess.run(
                [str(PROJECT_DIR / "scripts" / "kafka-local"), "status"],
                env=self.env,
                check=False,
                capture_output=True,
                timeout=60,
            ).returncode
            == 0
        )

    def _admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(bootstrap_servers=self.bootstrap_list, request_timeout_ms=5000)

    def controller(self) -> int:
        """The active controller (the leader of the KRaft quorum), as the quorum describes itself."""
        admin = self._admin()
        try:
            quorum = admin.describe_metadata_quorum()
            return quorum["topics"][0]["partitions"][0]["leader_id"]
        finally:
            admin.close()

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> the broker that leads it now."""
        admin = self._admin()
        try:
            described = admin.describe_topics([topic])
            return {p["partition_index"]: p["leader_id"] for p in described[0]["partitions"]}
        finally:
            admin.close()

    def isr(self, topic: str) -> dict[int, list[int]]:
        admin = self._admin()
        try:
            described = admin.describe_topics([topic])
            return {p["partition_index"]: sorted(p["isr_nodes"]) for p in described[0]["partitions"]}
        finally:
            admin.close()

    def group_coordinator(self, group: str) -> int:
        """The broker that coordinates `group`: the leader of the __consumer_offsets partition
        that Kafka assigns the group to (abs(groupId.hashCode()) % partitions)."""
        leaders = self.leaders("__consumer_offsets")
        return leaders[(java_string_hash(group) & 0x7FFFFFFF) % len(leaders)]

    def wait_until(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except KafkaError as exc:
                last_error = exc
            time.sleep(0.5)
        raise AssertionError(f"{what} not within {timeout_s} s (last error: {last_error!r})")

    def topics_create(self, names: list[str]) -> None:
        """Topics replicated as topics_ensure makes them on a cluster: RF 3, min ISR 2."""
        kafka_topics_create(self.bootstrap, names, replication_factor=min(3, self.brokers))


def campaign_kafka() -> PrivateBroker | KafkaCluster:
    """The fault campaign's Kafka: a private single broker, or with KAFKA_BROKERS=3 the local
    3-node cluster (KAFKA_CLUSTER_BOOTSTRAP_SERVERS), which also allows the `broker_kill` fault."""
    if os.environ.get("KAFKA_BROKERS", "1") == "3":
        # Files of its own: the cluster tests' var/kafka-cluster may hold another port layout.
        return KafkaCluster(
            home=os.environ.get("KAFKA_CLUSTER_HOME_DIR") or str(PROJECT_DIR / "var" / "kafka-chaos-cluster")
        )
    return PrivateBroker(port=19192)


def broker_kill(cluster: KafkaCluster, *, seed: int, moment: float, down_s: float = 5.0) -> int:
    """The `broker_kill` fault: SIGKILL one node drawn from the seed and the fault's moment (any
    node: partition leaders, the group coordinator and the active controller are all fair game),
    leave it down `down_s` seconds, start it again and wait until it is registered."""
    node = broker_kill_draw(seed=seed, moment=moment, brokers=cluster.brokers)
    cluster.kill(node)
    time.sleep(down_s)
    cluster.start(node)
    return node


def broker_kill_draw(*, seed: int, moment: float, brokers: int) -> int:
    """The node a `broker_kill` at `moment` of campaign `seed` kills: the same seed replays it."""
    return random.Random(f"{seed}-{moment}").randint(1, brokers)
