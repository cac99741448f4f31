"""Recording: outbox_atomic() writes a block's rows with one INSERT, with atomic()'s semantics."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from outbox.models import OutboxEvent
from outbox.recording import outbox_atomic, outbox_record
from outbox.relay import _record_headers, claim_batch
from tests.outbox.events_for_tests import SequenceRecorded

pytestmark = pytest.mark.django_db


def _record(key: str, sequence: int) -> None:
    outbox_record(event=SequenceRecorded(product_id=key, sequence=sequence))


def _recorded() -> list[tuple[str, int]]:
    return [(row.key, row.payload["sequence"]) for row in OutboxEvent.objects.order_by("seq")]


def _outbox_inserts(queries: CaptureQueriesContext) -> int:
    # On PostgreSQL the INSERT is the CTE of a statement that also NOTIFYs the relay loop.
    return sum(1 for q in queries.captured_queries if f"INSERT INTO {OutboxEvent._meta.db_table} " in q["sql"])


def test_a_block_writes_its_rows_with_one_insert_in_recording_order():
    with CaptureQueriesContext(connection) as queries, outbox_atomic():
        for sequence in range(3):
            _record("1", sequence)
        assert not OutboxEvent.objects.exists()  # waiting for the end of the block
    assert _outbox_inserts(queries) == 1
    assert _recorded() == [("1", 0), ("1", 1), ("1", 2)]


def test_a_block_that_raises_leaves_no_row():
    with pytest.raises(RuntimeError), outbox_atomic():  # noqa: PT012 - the block that raises is what is tested
        _record("1", 0)
        raise RuntimeError("the service failed after recording")
    assert _recorded() == []


def test_a_nested_savepoint_that_rolls_back_takes_only_its_own_rows():
    with outbox_atomic():
        _record("1", 0)
        try:
            with transaction.atomic():
                _record("1", 1)  # its savepoint rolls back alone: the row must go with it
                raise RuntimeError("inner failure, handled by the service")
        except RuntimeError:
            pass
        _record("1", 2)
    assert _recorded() == [("1", 0), ("1", 2)]


def test_rows_of_nested_blocks_keep_the_recording_order():
    with outbox_atomic():
        _record("1", 0)
        with outbox_atomic():
            _record("1", 1)
            with transaction.atomic():
                _record("1", 2)
            _record("1", 3)
        _record("1", 4)
    assert _recorded() == [("1", n) for n in range(5)]


def test_an_inner_block_that_raises_keeps_the_outer_rows():
    with outbox_atomic():
        _record("1", 0)
        with pytest.raises(RuntimeError), outbox_atomic():  # noqa: PT012 - the block that raises is what is tested
            _record("1", 1)
            raise RuntimeError("inner block fails")
        _record("1", 2)
    assert _recorded() == [("1", 0), ("1", 2)]


def test_the_aggregate_version_is_a_column_and_a_header_never_a_payload_field():
    # given
    with transaction.atomic():
        outbox_record(event=SequenceRecorded(product_id="9", sequence=1, aggregate_version=41))
        outbox_record(event=SequenceRecorded(product_id="9", sequence=2))
    # when
    claimed = claim_batch(token=uuid.uuid4(), limit=10)
    # then
    versioned, unversioned = OutboxEvent.objects.order_by("seq")
    assert (versioned.aggregate_version, unversioned.aggregate_version) == (41, None)
    assert "aggregate_version" not in versioned.payload
    assert ("aggregate_version", b"41") in _record_headers(claimed[0])
    assert "aggregate_version" not in dict(_record_headers(claimed[1]))
