"""The claim returns min(N, claimable rows), whatever the keys it must hold back: one blocked key
never stalls the others. Checked on the case that stalled every key, and against a brute-force
model over random tables (keys x row states x leases): exactly where each key held back is held
back by its oldest unfinished row (as the relay leaves its keys), and on every table it takes
only what the rules allow."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from outbox.models import OutboxEvent
from outbox.relay import claim_batch
from tests.outbox.events_for_tests import outbox_rows_bulk, row_locked_by_another_relay

pytestmark = pytest.mark.django_db


def test_one_key_in_backoff_with_a_deep_backlog_does_not_stall_the_other_keys():
    # given one hot key whose oldest row waits for its retry, with 599 due rows behind it
    outbox_rows_bulk(topic="t", keys=1, per_key=600)
    oldest = OutboxEvent.objects.earliest("seq")
    OutboxEvent.objects.filter(seq=oldest.seq).update(attempts=1, available_at=timezone.now() + timedelta(minutes=5))
    # and ten other keys with one due row each, all recorded after the hot key's rows
    for key in range(2, 12):
        OutboxEvent.objects.bulk_create(
            [
                OutboxEvent(
                    topic="t",
                    key=str(key),
                    type="SequenceRecorded",
                    aggregatetype="product",
                    aggregateid=str(key),
                    payload={"product_id": str(key), "sequence": 0},
                    occurred_at=timezone.now(),
                    available_at=timezone.now(),
                )
            ]
        )
    # when a relay claims a batch of 500
    claimed = claim_batch(token=uuid.uuid4(), limit=500)
    # then it takes the ten other keys' rows, and none of the hot key's
    assert sorted(int(row.key) for row in claimed) == list(range(2, 12))


# The states a row can be in, as the claim sees them.
STATES = ("published", "dead", "due", "backoff", "leased", "expired", "in_flight")
LANES = ["lane-a", "lane-b"]  # the configured topics; "other" is a topic outside them


def _expected_claim(rows: list[tuple[int, str, str, str]], *, limit: int, dead_blocks: bool, fair: bool) -> list[int]:
    """Brute force, from the rules in docs/OUTBOX.md. Rows are (seq, key, topic, state).

    A key's rows, oldest first, are claimable until its first row that must wait (in backoff,
    under another relay's live lease, dead when dead rows block); this drain's own in-flight
    rows neither wait nor are claimed again. Of the claimable rows, each configured topic gets
    up to an equal share of the batch (fair share on), then the oldest of any topic fill it.
    A picked row whose key has an older claimable row left out (on another topic, beyond its
    share) is dropped. A row whose lease expired (abandoned) is a batch of its own: the batch
    ends before it, or with it when it comes first."""
    blocked: set[str] = set()
    claimable: list[tuple[int, str, str, str]] = []
    for seq, key, topic, state in sorted(rows):
        if key in blocked:
            continue
        if state in ("backoff", "leased") or (state == "dead" and dead_blocks):
            blocked.add(key)
        elif state in ("due", "expired"):
            claimable.append((seq, key, topic, state))
    picked: list[tuple[int, str, str, str]] = []
    if fair:
        share = max(1, limit // len(LANES))
        for lane in LANES:
            picked += [row for row in claimable if row[2] == lane][: min(share, limit - len(picked))]
            if len(picked) >= limit:
                break
    picked += [row for row in claimable if row not in picked][: limit - len(picked)]
    picked.sort()
    picked = [
        row
        for row in picked
        if not any(other[1] == row[1] and other[0] < row[0] and other not in picked for other in claimable)
    ]
    claimed: list[int] = []
    for seq, _, _, state in picked:
        if state == "expired":
            if not claimed:
                claimed.append(seq)
            break
        claimed.append(seq)
    return claimed


def _due_event(*, key: str, topic: str, now) -> OutboxEvent:
    """An unsaved pending row of `key` on `topic`, due at `now`."""
    return OutboxEvent(
        topic=topic,
        key=key,
        type="SequenceRecorded",
        aggregatetype="product",
        aggregateid=key,
        payload={},
        occurred_at=now,
        available_at=now,
    )


def random_table(rng: random.Random, *, now, in_flight: uuid.UUID) -> list[tuple[int, str, str, str]]:
    """A fresh outbox of 1-30 rows over 1-6 keys in random states; (seq, key, topic, state)."""
    OutboxEvent.objects.all().delete()
    other_relay = uuid.uuid4()
    keys = [str(k) for k in range(rng.randint(1, 6))]
    topics = rng.choice([LANES, [*LANES, "other"], LANES[:1]])
    weights = [rng.random() for _ in STATES]
    events = []
    for _ in range(rng.randint(1, 30)):
        key = rng.choice(keys)
        state = rng.choices(STATES, weights)[0]
        event = _due_event(key=key, topic=rng.choice(topics), now=now)
        if state == "published":
            event.status, event.published_at = "published", now
        elif state == "dead":
            event.status, event.attempts = "dead", 3
        elif state == "backoff":
            event.attempts, event.available_at = 1, now + timedelta(seconds=rng.randint(1, 600))
        elif state == "leased":
            event.claim_token, event.claim_expires_at = other_relay, now + timedelta(seconds=30)
        elif state == "expired":
            event.claim_token, event.claim_expires_at = other_relay, now - timedelta(seconds=1)
        elif state == "in_flight":
            event.claim_token, event.claim_expires_at = in_flight, now + timedelta(seconds=30)
        events.append((event, state))
    created = OutboxEvent.objects.bulk_create([event for event, _ in events])
    return [(row.seq, row.key, row.topic, state) for row, (_, state) in zip(created, events, strict=True)]


@pytest.mark.parametrize("seed", range(6))
def test_the_claim_equals_a_brute_force_model_on_random_tables(seed, settings):
    rng = random.Random(seed)
    now = timezone.now()
    settings.KAFKA_TOPICS = {"catalog-events": LANES[0], "order-events": LANES[1]}
    exact = 0
    for _ in range(60):
        dead_blocks = rng.random() < 0.5
        fair = rng.random() < 0.7
        settings.OUTBOX_DEAD_BLOCKS_KEY = dead_blocks
        settings.OUTBOX_FAIR_SHARE = fair
        in_flight = uuid.uuid4()
        table = random_table(rng, now=now, in_flight=in_flight)
        limit = rng.randint(1, 12)
        # when
        claimed = [row.seq for row in claim_batch(token=uuid.uuid4(), limit=limit, now=now, in_flight=in_flight)]
        # then it takes only rows the rules allow, each key's from its oldest claimable row on
        # without a gap; and exactly the model's rows wherever a key held back is held back by
        # its oldest unfinished row, as the relay leaves its keys (the claim looks at that row
        # only to keep a key's rows out of its limit)
        assert claimed_only_what_the_rules_allow(table, claimed, blockers=_blockers(dead_blocks)), (table, limit)
        assert len(claimed) <= limit
        expected = _expected_claim(table, limit=limit, dead_blocks=dead_blocks, fair=fair)
        if not fair:
            assert set(claimed) <= set(expected), (table, limit, dead_blocks)
        if keys_held_back_by_their_oldest_row(table, blockers=_blockers(dead_blocks)):
            exact += 1
            assert claimed == expected, (table, limit, dead_blocks, fair)
    assert exact >= 20, f"only {exact} of 60 tables checked against the model"


def _blockers(dead_blocks: bool) -> tuple[str, ...]:
    return ("backoff", "leased", "dead") if dead_blocks else ("backoff", "leased")


def claimable_of_each_key(table: list[tuple[int, str, str, str]], *, blockers: tuple[str, ...]) -> dict[str, list[int]]:
    """Each key's claimable rows, oldest first: due ones (and expired ones, unless `expired` is a
    blocker) up to its first row in a state of `blockers`; rows in flight neither block nor count."""
    claimable: dict[str, list[int]] = {}
    blocked: set[str] = set()
    for seq, key, _, state in sorted(table):
        claimable.setdefault(key, [])
        if key in blocked:
            continue
        if state in blockers:
            blocked.add(key)
        elif state in ("due", "expired"):
            claimable[key].append(seq)
    return claimable


def claimed_only_what_the_rules_allow(
    table: list[tuple[int, str, str, str]], claimed: list[int], *, blockers: tuple[str, ...]
) -> bool:
    """Of each key a prefix of its claimable rows: no row behind one held back, none behind a
    claimable row of its key left out of the claim. (Oldest first: the claim sorts its rows.)"""
    key_of = {seq: key for seq, key, _, _ in table}
    claimable = claimable_of_each_key(table, blockers=blockers)
    taken: dict[str, list[int]] = {}
    for seq in claimed:
        taken.setdefault(key_of[seq], []).append(seq)
    return claimed == sorted(claimed) and all(rows == claimable[key][: len(rows)] for key, rows in taken.items())


def keys_held_back_by_their_oldest_row(table: list[tuple[int, str, str, str]], *, blockers: tuple[str, ...]) -> bool:
    """Whether every key with a row in a state of `blockers` has one as its oldest unfinished row
    (dead rows count as unfinished only when they block)."""
    first: dict[str, str] = {}
    has_blocker: set[str] = set()
    for _, key, _, state in sorted(table):
        if state == "published" or (state == "dead" and "dead" not in blockers):
            continue
        first.setdefault(key, state)
        if state in blockers:
            has_blocker.add(key)
    return all(first[key] in blockers for key in has_blocker)


def test_a_flood_on_one_topic_does_not_push_another_topics_events_behind_it(settings):
    # given 1,000 pending catalog events, then one order event
    settings.KAFKA_TOPICS = {"catalog-events": LANES[0], "order-events": LANES[1]}
    outbox_rows_bulk(topic=LANES[0], keys=50, per_key=20)
    OutboxEvent.objects.bulk_create(
        [
            OutboxEvent(
                topic=LANES[1],
                key="order-1",
                type="OrderPlaced",
                aggregatetype="order",
                aggregateid="order-1",
                payload={},
                occurred_at=timezone.now(),
                available_at=timezone.now(),
            )
        ]
    )
    # when a relay claims a batch of 100
    claimed = claim_batch(token=uuid.uuid4(), limit=100)
    # then the order event is in it, and the catalog events fill the rest, oldest first
    assert len(claimed) == 100
    assert [row.key for row in claimed if row.topic == LANES[1]] == ["order-1"]
    catalog = [row.seq for row in claimed if row.topic == LANES[0]]
    assert catalog == sorted(OutboxEvent.objects.filter(topic=LANES[0]).values_list("seq", flat=True))[:99]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_row_another_relay_is_claiming_right_now_holds_its_key_back():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.fail("row locks (SKIP LOCKED) are proven on PostgreSQL: run with DATABASE_URL=postgres://...")
    # given another relay in the middle of its claim: it holds the lock on key 1's oldest row
    outbox_rows_bulk(topic="t", keys=2, per_key=3)
    oldest = OutboxEvent.objects.filter(key="1").earliest("seq").seq
    with row_locked_by_another_relay(oldest):
        # when this relay claims
        claimed = claim_batch(token=uuid.uuid4(), limit=100)
    # then it takes key 2 only: key 1's later rows would otherwise overtake the locked one
    assert sorted((row.key, row.payload["sequence"]) for row in claimed) == [("2", 0), ("2", 1), ("2", 2)]


def test_a_key_held_back_behind_its_oldest_row_does_not_take_a_topics_share(settings):
    # given key k: its oldest row due (on lane-b), then a row another relay holds and two due
    # rows (on lane-a), a state only an anomaly leaves (a row requeued from dead, a late
    # commit); and key j's due row on lane-a
    settings.KAFKA_TOPICS = {"catalog-events": LANES[0], "order-events": LANES[1]}
    settings.OUTBOX_FAIR_SHARE = True
    now = timezone.now()
    events = [_due_event(key=key, topic=LANES[lane], now=now) for key, lane in [("k", 1), *[("k", 0)] * 3, ("j", 0)]]
    events[1].claim_token, events[1].claim_expires_at = uuid.uuid4(), now + timedelta(seconds=30)
    created = OutboxEvent.objects.bulk_create(events)
    # when a relay claims two rows (a share of one for each topic)
    claimed = claim_batch(token=uuid.uuid4(), limit=2, now=now)
    # then it takes k's oldest row and j's: k's rows behind the held one do not use lane-a's share
    assert [row.seq for row in claimed] == [created[0].seq, created[4].seq]
