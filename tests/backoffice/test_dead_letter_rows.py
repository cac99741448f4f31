"""The DeadLetter row of each poison record: one per record however often its batch is applied
(a redelivery), and one for each record, also where a recreated topic puts another record at
an offset that already has a letter (its offsets start again at 0)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from backoffice.models import DeadLetter
from backoffice.projections import PoisonRecord, batch_apply

pytestmark = pytest.mark.django_db


def _poison(value: bytes) -> PoisonRecord:
    return PoisonRecord("catalog-events", 0, 5, b"3", value, [("event_id", b"x")], "record is not JSON")


def test_a_poison_record_delivered_again_is_one_dead_letter():
    batch_apply(group="g", events=[], poison=[_poison(b"not json")])
    batch_apply(group="g", events=[], poison=[_poison(b"not json")])
    assert DeadLetter.objects.count() == 1


def test_another_record_at_the_offset_of_a_dead_letter_is_a_dead_letter_too():
    # given a dead letter at offset 5 of partition 0
    batch_apply(group="g", events=[], poison=[_poison(b"not json")])
    # when the topic is recreated and another poison record lands at the same offset
    batch_apply(group="g", events=[], poison=[_poison(b"{also not valid")])
    # then both are dead letters: the second is kept, not dropped as a duplicate of the first
    assert sorted(bytes(letter.value) for letter in DeadLetter.objects.all() if letter.value is not None) == [
        b"not json",
        b"{also not valid",
    ]


def test_a_letter_inserted_without_a_digest_by_the_release_before_is_stored():
    # (a consumer of the release before, still running after `migrate`, knows no record_digest)
    columns = ["consumer_group", "topic", "partition", "offset", "headers", "error", "status", "created_at"]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DeadLetter._meta.db_table} ({', '.join(connection.ops.quote_name(c) for c in columns)}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            ["g", "catalog-events", 0, 5, "[]", "record is not JSON", "open", timezone.now()],
        )
    assert DeadLetter.objects.get().record_digest == ""
