"""consume_events against the real broker: redelivery, crashes, rebalances, poison, replay."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from kafka import KafkaAdminClient

from backoffice.consumer import EventConsumer, _CommitBeforeRevoke
from backoffice.models import DeadLetter, EventLog, InboxEntry, ProductMetrics
from tests.backoffice.stream import (
    Record,
    like,
    produce,
    projections_differences,
    stock,
    stream_make,
    view,
)
from tests.support.kafka import kafka_read_all, kafka_topics_create
from tests.support.processes import ManagedProcess, consume_events_managed

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _consume(group: str, *, until_idle_s: float = 3.0, batch_size: int = 200) -> EventConsumer:
    consumer = EventConsumer(topics=list(settings.KAFKA_TOPICS.values()), group_id=group, batch_size=batch_size)
    try:
        consumer.run(until_idle_s=until_idle_s)
    finally:
        consumer.close()
    return consumer


def _consumer_process(name: str, env: dict, tmp_path, group: str, *extra: str) -> ManagedProcess:
    return consume_events_managed(name=name, env=env, log_path=tmp_path / f"{name}.log", group=group, extra=extra)


def _wait_for_inbox(count: int, timeout_s: float = 90.0) -> int:
    """Wait until at least `count` events are applied; fails the test if they never are."""
    deadline = time.monotonic() + timeout_s
    while (handled := InboxEntry.objects.count()) < count:
        assert time.monotonic() < deadline, f"{handled} events applied after {timeout_s} s, waited for {count}"
        time.sleep(0.1)
    return handled


Assignment = dict[str, frozenset[tuple[str, int]]]  # member id -> its partitions


def _group_assignment(group: str) -> tuple[str, Assignment]:
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY)
    try:
        described = admin.describe_groups([group])[group]
    finally:
        admin.close()
    assignment = {}
    for member in described["members"]:
        given = member["member_assignment"] or {}
        assignment[member["member_id"]] = frozenset(
            (topic["topic"], partition)
            for topic in given.get("assigned_partitions", [])
            for partition in topic["partitions"]
        )
    return described["group_state"], assignment


def _wait_for_stable_group(group: str, *, members: int, partitions: int, timeout_s: float = 60.0) -> Assignment:
    """The group's assignment once it is stable with this many members sharing every partition."""
    deadline = time.monotonic() + timeout_s
    while True:
        state, assignment = _group_assignment(group)
        covered = set().union(*assignment.values()) if assignment else set()
        if state == "Stable" and len(assignment) == members and len(covered) == partitions:
            return assignment
        assert time.monotonic() < deadline, f"group not stable with {members} members: {state} {assignment}"
        time.sleep(0.2)


def test_every_record_produced_twice_gives_the_metrics_of_once(kafka_topics):
    records, expected = stream_make(events=500)
    produce(records, kafka_topics)
    produce(records, kafka_topics)  # the same event ids again
    consumer = _consume(f"g-{uuid.uuid4().hex[:6]}")
    assert consumer.stats.polled == 2 * len(records)
    assert consumer.stats.duplicates == len(records)
    assert projections_differences(expected) == []
    assert EventLog.objects.count() == len(records)


def test_until_idle_counts_only_once_every_partition_answered_a_fetch(kafka_topics, monkeypatch):
    # given events on the topics, and a consumer whose first fetches are answered late (a busy
    # broker): its partitions are held back for 3 s after they are assigned
    records, expected = stream_make(events=50, seed=3)
    produce(records, kafka_topics)
    held_until: list[float] = []
    assigned_as_usual = _CommitBeforeRevoke.on_partitions_assigned

    def assigned_and_held(listener, assigned):
        assigned_as_usual(listener, assigned)
        listener.loop.consumer.pause(*assigned)
        held_until.append(time.monotonic() + 3.0)

    monkeypatch.setattr(_CommitBeforeRevoke, "on_partitions_assigned", assigned_and_held)
    consumer = EventConsumer(topics=list(settings.KAFKA_TOPICS.values()), group_id=f"g-{uuid.uuid4().hex[:6]}")
    poll_as_usual = consumer.consumer.poll

    def poll(**kwargs):
        if held_until and time.monotonic() >= held_until[-1]:
            consumer.consumer.resume(*consumer.consumer.paused())
        return poll_as_usual(**kwargs)

    monkeypatch.setattr(consumer.consumer, "poll", poll)
    # when it runs until idle for 1.5 s
    try:
        consumer.run(until_idle_s=1.5)
    finally:
        consumer.close()
    # then it did not take the wait for idleness: it read everything once the fetches came
    assert held_until, "the partitions were never assigned"
    assert consumer.stats.polled == len(records)
    assert projections_differences(expected) == []


def test_consumer_killed_mid_stream_and_restarted_counts_exactly(kafka_topics, subprocess_env, tmp_path):
    # given the first half of a stream and a consumer subprocess
    records, expected = stream_make(events=3000, seed=11)
    group = f"g-{uuid.uuid4().hex[:6]}"
    produce(records[:1500], kafka_topics)
    first = _consumer_process("consumer-1", subprocess_env, tmp_path, group)
    first.start()
    # when it is SIGKILLed once it has applied some of it; the second half comes after the
    # kill, so the stream is unfinished at the kill whatever the consumer's speed
    _wait_for_inbox(400)
    first.kill()
    handled_before_restart = InboxEntry.objects.count()
    assert 400 <= handled_before_restart <= 1500
    produce(records[1500:], kafka_topics)
    second = _consumer_process("consumer-2", subprocess_env, tmp_path, group, "--until-idle", "4")
    second.start()
    assert second.wait(timeout=120) == 0, second.log_tail()
    # then nothing was lost and nothing counted twice
    assert InboxEntry.objects.count() == len(records)
    assert projections_differences(expected) == []


def test_group_members_joining_and_leaving_mid_stream_count_exactly(kafka_topics, subprocess_env, tmp_path):
    records, expected = stream_make(events=3000, seed=5)
    group = f"g-{uuid.uuid4().hex[:6]}"
    partitions = 2 * 3  # two topics of 3 partitions
    # the stream comes in three parts, each after a change of the group: every change
    # happens mid-stream by construction
    produce(records[:1000], kafka_topics)
    # two consumers share the 6 partitions
    members = [_consumer_process(f"member-{n}", subprocess_env, tmp_path, group) for n in range(2)]
    for member in members:
        member.start()
    two = _wait_for_stable_group(group, members=2, partitions=partitions)
    _wait_for_inbox(300)
    # a third joins: the group rebalances to three members
    third = _consumer_process("member-2", subprocess_env, tmp_path, group)
    third.start()
    three = _wait_for_stable_group(group, members=3, partitions=partitions)
    assert set(three) > set(two), "the new member got no partition"
    assert all(three.values()), "the new member got no partition"
    produce(records[1000:2000], kafka_topics)
    _wait_for_inbox(1500)
    # the first leaves (SIGTERM: finishes its batch and commits): the group rebalances again
    assert members[0].stop() == 0, members[0].log_tail()
    after = _wait_for_stable_group(group, members=2, partitions=partitions)
    assert set(after) < set(three)
    assert after != two
    produce(records[2000:], kafka_topics)
    _wait_for_inbox(len(records))
    for member in (members[1], third):
        assert member.stop() == 0, member.log_tail()
    assert InboxEntry.objects.count() == len(records)
    assert projections_differences(expected) == []


def test_poison_records_are_dead_lettered_and_never_block_good_ones(kafka_topics):
    good, expected = stream_make(events=200, seed=3)
    sample = like("1", True)
    poison = [
        Record("catalog-events", b"1", b"{broken json", sample.headers),
        Record("catalog-events", b"1", sample.value, [h for h in sample.headers if h[0] != "event_id"]),
        Record(
            "catalog-events",
            b"1",
            sample.value,
            [(n, b"Unheard" if n == "event_type" else v) for n, v in sample.headers],
        ),
        Record("catalog-events", b"1", b'{"product_id": "1", "liked": "maybe"}', sample.headers),
    ]
    mixed = []
    for index, record in enumerate(good):
        mixed.append(record)
        if index % 50 == 0:
            mixed.append(poison[index // 50])
    produce(mixed, kafka_topics)
    _consume(f"g-{uuid.uuid4().hex[:6]}")
    assert projections_differences(expected) == []
    letters = list(DeadLetter.objects.order_by("offset"))
    assert len(letters) == 4
    assert all(letter.error for letter in letters)
    dlq = kafka_read_all(f"{kafka_topics['catalog-events']}.dlq", expected=4)
    assert len(dlq) == 4
    assert all(
        r.headers["dlq_error"] and r.headers["dlq_source_topic"] == kafka_topics["catalog-events"].encode() for r in dlq
    )
    assert {bytes(letter.value or b"") for letter in letters} == {r.value for r in dlq}


def test_stock_delivered_out_of_order_keeps_the_highest_version(kafka_topics):
    produce([stock("42", 7, 3), stock("42", 9, 2), stock("42", 11, 1)], kafka_topics)
    _consume(f"g-{uuid.uuid4().hex[:6]}")
    metrics = ProductMetrics.objects.get(product_id="42")
    assert (metrics.stock, metrics.stock_version) == (7, 3)


def test_stock_reaching_zero_invalidates_the_cached_product(kafka_topics):
    from django.core.cache import cache

    key = settings.PRODUCT_CACHE_KEY.format(product_id="77")
    cache.set(key, {"stock": 1})
    produce([view("77"), stock("77", 0, 1)], kafka_topics)
    _consume(f"g-{uuid.uuid4().hex[:6]}")
    assert cache.get(key) is None


def test_replay_rebuilds_projections_equal_to_live(kafka_topics, settings):
    records, expected = stream_make(events=800, seed=9)
    produce(records, kafka_topics)
    group = f"g-{uuid.uuid4().hex[:6]}"
    settings.BACKOFFICE_GROUP_ID = group
    _consume(group)
    live = sorted(
        ProductMetrics.objects.values_list(
            "product_id", "like_count", "view_count", "sales_quantity", "sales_amount", "stock"
        )
    )
    call_command("rebuild_projections", "--group", group, "--until-idle", "3")
    replayed = sorted(
        ProductMetrics.objects.values_list(
            "product_id", "like_count", "view_count", "sales_quantity", "sales_amount", "stock"
        )
    )
    assert replayed == live
    assert projections_differences(expected) == []
    assert InboxEntry.objects.filter(consumer_group=group).count() == len(records)


def test_a_rebuild_is_refused_while_the_group_has_a_live_consumer(kafka_topics, subprocess_env, tmp_path):
    # given a group whose consumer runs (as under `make run`) and has applied a stream
    records, expected = stream_make(events=300, seed=5)
    group = f"g-{uuid.uuid4().hex[:6]}"
    produce(records, kafka_topics)
    live = _consumer_process("consumer-live", subprocess_env, tmp_path, group)
    live.start()
    try:
        _wait_for_inbox(len(records))
        _wait_for_stable_group(group, members=1, partitions=6)
        # when a rebuild of that group is asked for
        with pytest.raises(CommandError, match="live member"):
            call_command("rebuild_projections", "--group", group, "--until-idle", "3")
        # then nothing was emptied (before: it took the partitions the live one was not
        # assigned, replayed those, and left the projections short for good)
        assert projections_differences(expected) == []
        assert InboxEntry.objects.filter(consumer_group=group).count() == len(records)
    finally:
        live.stop()
    # and once the consumer is stopped, the rebuild runs
    call_command("rebuild_projections", "--group", group, "--until-idle", "3")
    assert projections_differences(expected) == []


def test_a_topic_deleted_and_recreated_under_the_consumer_is_followed(kafka_topics, subprocess_env, tmp_path):
    # given a consumer that has applied a topic's records
    group = f"g-{uuid.uuid4().hex[:6]}"
    before, after = stream_make(events=300, seed=1)[0], stream_make(events=300, seed=2)[0]
    catalog = [r for r in before if r.topic_stream == "catalog-events"]
    produce(catalog, kafka_topics)
    consumer = _consumer_process("consumer", subprocess_env, tmp_path, group)
    consumer.start()
    _wait_for_inbox(len(catalog))
    # when the topic is deleted and created again (its offsets start over, below the group's)
    topic = kafka_topics["catalog-events"]
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY)
    try:
        admin.delete_topics([topic])
        deadline = time.monotonic() + 60
        while topic in admin.list_topics():
            assert time.monotonic() < deadline, "topic not deleted"
            time.sleep(0.2)
    finally:
        admin.close()
    kafka_topics_create(",".join(settings.KAFKA_BOOTSTRAP_SERVERS), [topic], partitions=3)
    later = [r for r in after if r.topic_stream == "catalog-events"]
    produce(later, kafka_topics)
    # then the consumer reads the new topic from its start and applies every new record
    _wait_for_inbox(len(catalog) + len(later), timeout_s=120)
    assert consumer.running, consumer.log_tail()
    assert consumer.stop() == 0, consumer.log_tail()


def test_the_consumer_does_not_create_a_topic_it_subscribes_to(kafka_topics):
    # given a topic the back office subscribes to that does not exist (deleted, or not made yet)
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer(topics=[missing], group_id=f"g-{uuid.uuid4().hex[:6]}", batch_size=50)
    # when it polls long enough to have asked the broker for the topic's metadata (a consumer
    # with nothing assigned is not idle: it is stopped from a timer, as a SIGTERM would)
    stopper = threading.Timer(4.0, consumer.stop)
    stopper.start()
    try:
        consumer.run()
    finally:
        stopper.cancel()
        consumer.close()
    # then the topic is still missing: the broker's defaults (partitions, replication) would
    # place keys elsewhere once `ensure_topics` makes it properly, and a deletion made to
    # recreate a topic would be undone under the operator's feet
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY)
    try:
        assert missing not in admin.list_topics()
    finally:
        admin.close()


def test_batches_in_quick_succession_commit_their_offsets_without_failed_commits(kafka_topics, caplog):
    # given 300 records already on the topics, taken one per batch: batches far quicker than
    # the broker's answer to each offset commit
    records, expected = stream_make(events=300)
    produce(records, kafka_topics)
    group = f"g-{uuid.uuid4().hex[:6]}"
    # when the back office applies them
    with caplog.at_level("WARNING", logger="backoffice.consumer"):
        consumer = _consume(group, batch_size=1)
    # then every batch is applied, no offset commit failed on the way (a commit sent while
    # earlier ones were unanswered was refused by the client, "Node paused: max_in_flight")
    assert consumer.stats.batches == len(records)
    assert projections_differences(expected) == []
    assert [r.getMessage() for r in caplog.records if "offset commit" in r.getMessage()] == []
    # and the group's committed offsets are the end of every partition
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY)
    try:
        committed = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert sum(meta.offset for meta in committed.values()) == len(records)
