"""The real broker behaves as the pipeline assumes: keyed records keep their order per key,
headers travel, and a consumer group's manually committed offsets are what it processed."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from django.conf import settings
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

pytestmark = pytest.mark.integration


def test_keyed_records_keep_per_key_order_and_headers_and_group_commits(kafka_topics):
    # given a 3-partition topic and an idempotent producer that waits for all replicas
    topic = kafka_topics["order-events"]
    producer = KafkaProducer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        **settings.KAFKA_SECURITY,
    )
    sent: dict[str, list[int]] = defaultdict(list)
    keys = [f"{n}" for n in range(1, 13)]
    for sequence in range(30):
        for key in keys:
            event_id = str(uuid.uuid4())
            producer.send(
                topic,
                key=key.encode(),
                value=f"{sequence}".encode(),
                headers=[("event_id", event_id.encode()), ("seq", f"{sequence}".encode())],
            )
            sent[key].append(sequence)
    producer.flush()
    producer.close()

    # when a consumer in a group reads everything and commits offsets by hand
    group = f"test-group-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings.KAFKA_SECURITY,
    )
    received: dict[str, list[int]] = defaultdict(list)
    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    last_offsets: dict[TopicPartition, int] = {}
    total = sum(len(values) for values in sent.values())
    seen = 0
    for _ in range(120):
        for tp, records in consumer.poll(timeout_ms=500).items():
            for record in records:
                headers = dict(record.headers)
                key = record.key.decode()
                assert uuid.UUID(headers["event_id"].decode())
                assert headers["seq"] == record.value
                received[key].append(int(record.value))
                partitions_of_key[key].add(record.partition)
                last_offsets[tp] = record.offset
                seen += 1
        if seen >= total:
            break
    consumer.commit({tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last_offsets.items()})
    consumer.close()

    # then every key's records arrived once, in order, from one partition
    assert received == sent
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert len({p for parts in partitions_of_key.values() for p in parts}) > 1
    # and the group's committed offsets equal the end of every partition
    checker = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group_id=group,
        enable_auto_commit=False,
        **settings.KAFKA_SECURITY,
    )
    partitions = [TopicPartition(topic, p) for p in range(3)]
    end_offsets = checker.end_offsets(partitions)
    committed = {tp: checker.committed(tp) for tp in partitions}
    checker.close()
    assert sum(end_offsets.values()) == total
    assert committed == {tp: end_offsets[tp] for tp in partitions}
