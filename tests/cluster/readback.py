"""What the relay tests on the cluster check after the faults, read back from the brokers."""

from __future__ import annotations

import json
from collections import defaultdict

from outbox.models import OutboxEvent
from tests.support.kafka import ReadRecord, kafka_read_all


def published_everything_in_order(topic: str, *, keys: int, per_key: int) -> list[ReadRecord]:
    """Assert what the issue calls delivery on a cluster, and return the records read.

    - every row is published (none dead, none pending);
    - every event id is on the topic, and the only extras are duplicates of the same event id;
    - every key's sequence, read in offset order, first shows each number in order;
    - nothing acknowledged is lost: the (partition, offset) the relay recorded for every row
      holds that row's event id.
    """
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.DEAD).count() == 0
    assert OutboxEvent.objects.exclude(status=OutboxEvent.Status.PUBLISHED).count() == 0
    rows = list(OutboxEvent.objects.values_list("event_id", "kafka_partition", "kafka_offset"))
    assert len(rows) == keys * per_key
    records = kafka_read_all(topic, timeout_s=60)  # to the end offsets
    ids = [r.headers["event_id"].decode() for r in records]
    expected_ids = {str(event_id) for event_id, _, _ in rows}
    assert set(ids) == expected_ids, f"missing on the topic: {len(expected_ids - set(ids))}"
    # Keyed as the rows' nullable columns are (all published here, so none is None).
    at: dict[tuple[int | None, int | None], str] = {
        (r.partition, r.offset): r.headers["event_id"].decode() for r in records
    }
    lost = [
        (str(event_id), partition, offset)
        for event_id, partition, offset in rows
        if at.get((partition, offset)) != str(event_id)
    ]
    assert lost == [], f"{len(lost)} acknowledged rows not at their recorded offset, e.g. {lost[:3]}"
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None, f"unkeyed record at {record.partition}:{record.offset}"
        by_key[record.key.decode()].append(json.loads(record.value)["sequence"])
    assert len(by_key) == keys
    out_of_order = {key: seq for key, seq in by_key.items() if list(dict.fromkeys(seq)) != list(range(per_key))}
    assert out_of_order == {}, f"{len(out_of_order)} keys out of order, e.g. {list(out_of_order.items())[:1]}"
    return records
