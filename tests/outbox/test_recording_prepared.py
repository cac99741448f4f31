"""The recording's INSERT is a prepared statement on PostgreSQL (OUTBOX_RECORD_PREPARED), and
preparing it changes nothing else on the connection and nothing in what is recorded."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from django.db import ProgrammingError, connection, transaction
from django.test.utils import CaptureQueriesContext

from outbox.models import OutboxEvent
from outbox.recording import outbox_atomic, outbox_record
from tests.outbox.events_for_tests import SequenceRecorded

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.fail("prepared statements are PostgreSQL's: run with DATABASE_URL=postgres://...")


def _prepared_outbox_inserts() -> tuple[int, int]:
    """The prepared statements of this session that insert into the outbox: how many, and how
    often they ran."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements"
            " WHERE statement LIKE %s",
            [f"%INSERT INTO {OutboxEvent._meta.db_table} %"],
        )
        statements, executions = cursor.fetchone()
        return int(statements), int(executions)


def _outbox_statement_executions() -> int:
    return _prepared_outbox_inserts()[1]


def _prepared_outbox_statements() -> int:
    return _prepared_outbox_inserts()[0]


def _place(key: str, sequences: range, *, aggregate_version: int | None = None) -> None:
    with outbox_atomic():
        for sequence in sequences:
            outbox_record(
                event=SequenceRecorded(product_id=key, sequence=sequence, aggregate_version=aggregate_version)
            )


def test_the_recording_statement_is_prepared_and_reused():
    # given
    _place("1", range(2))
    before = _outbox_statement_executions()
    # when
    for round_number in range(3):
        _place("1", range(2 + round_number * 2, 4 + round_number * 2))
    # then: the three recordings ran the statement prepared earlier in this session
    assert before >= 1
    assert _outbox_statement_executions() == before + 3
    assert [row.payload["sequence"] for row in OutboxEvent.objects.order_by("seq")] == list(range(8))


def test_with_the_setting_off_nothing_is_prepared(settings):
    # given
    settings.OUTBOX_RECORD_PREPARED = False
    before = _outbox_statement_executions()
    # when
    _place("1", range(3))
    # then
    assert _outbox_statement_executions() == before
    assert OutboxEvent.objects.count() == 3


def test_nothing_but_the_recording_is_prepared_and_the_connection_keeps_djangos_threshold():
    # given
    threshold = connection.connection.prepare_threshold if connection.connection else None
    # when
    for round_number in range(6):  # more than psycopg's default threshold of 5
        _place("1", range(round_number, round_number + 1))
        list(OutboxEvent.objects.filter(key="1").values_list("seq", flat=True))
    # then
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert prepared, "the recording was not prepared"
    assert all(f"INSERT INTO {OutboxEvent._meta.db_table} " in statement for statement in prepared), prepared
    assert connection.connection.prepare_threshold == threshold


def _record_then_fail(*, sequence: int, block: Callable[[], AbstractContextManager[object]]) -> None:
    with block():
        outbox_record(event=SequenceRecorded(product_id="1", sequence=sequence))
        raise RuntimeError("the service failed")


def test_a_rollback_between_recordings_does_not_break_the_next_one():
    # given: a prepared statement, then a transaction that rolls back (psycopg forgets its
    # prepared statements on rollback and deallocates them)
    _place("1", range(2))
    with pytest.raises(RuntimeError):
        _record_then_fail(sequence=99, block=outbox_atomic)
    # when
    _place("1", range(2, 4))
    # then
    assert [row.payload["sequence"] for row in OutboxEvent.objects.order_by("seq")] == [0, 1, 2, 3]


def test_a_savepoint_rolled_back_between_recordings_keeps_the_outer_rows():
    # given
    with transaction.atomic():
        outbox_record(event=SequenceRecorded(product_id="1", sequence=0))
        with pytest.raises(RuntimeError):
            _record_then_fail(sequence=1, block=transaction.atomic)
        # when
        outbox_record(event=SequenceRecorded(product_id="1", sequence=2))
    # then
    assert [row.payload["sequence"] for row in OutboxEvent.objects.order_by("seq")] == [0, 2]


def _record_versions(key: str, versions: list[int | None], first_sequence: int) -> None:
    with outbox_atomic():
        for offset, version in enumerate(versions):
            outbox_record(
                event=SequenceRecorded(product_id=key, sequence=first_sequence + offset, aggregate_version=version)
            )


def test_one_statement_serves_versions_of_every_size_and_none():
    # given: psycopg would type these int2, int4, int8 and NULL: four statements of the same text
    versions: list[list[int | None]] = [
        [7, 7],
        [None, None],
        [70_000, 70_000],
        [2**40, 2**40],
        [None, 7],
        [2**40, None],
    ]
    # when
    for index, pair in enumerate(versions):
        _record_versions("1", pair, first_sequence=index * 2)
    # then
    assert _prepared_outbox_statements() == 1
    recorded = [row.aggregate_version for row in OutboxEvent.objects.order_by("seq")]
    assert recorded == [version for pair in versions for version in pair]


def test_a_batch_of_more_than_eight_rows_is_written_whole():
    # when: 9 rows are two statements (8 rows with the NOTIFY, then 1)
    _place("1", range(9))
    _place("1", range(9, 18))
    # then
    assert [row.payload["sequence"] for row in OutboxEvent.objects.order_by("seq")] == list(range(18))
    assert _prepared_outbox_statements() == 2


def test_a_statement_deallocated_behind_psycopgs_back_fails_one_transaction_and_no_more():
    # given: the statement prepared, then dropped by SQL psycopg does not see
    _place("1", range(2))
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    # when
    with pytest.raises(ProgrammingError, match="does not exist"):
        _place("1", range(2, 4))
    _place("1", range(4, 6))
    # then: the failed transaction wrote nothing, the next one prepared the statement again
    assert [row.payload["sequence"] for row in OutboxEvent.objects.order_by("seq")] == [0, 1, 4, 5]


def test_after_a_deallocation_caught_in_a_savepoint_the_same_transaction_records_again():
    # given
    _place("1", range(1))
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    # when
    with transaction.atomic():
        with pytest.raises(ProgrammingError), transaction.atomic():
            outbox_record(event=SequenceRecorded(product_id="1", sequence=1))
        outbox_record(event=SequenceRecorded(product_id="1", sequence=2))
    # then
    assert [row.payload["sequence"] for row in OutboxEvent.objects.order_by("seq")] == [0, 2]


def test_query_logging_still_sees_the_prepared_statement():
    # when
    with CaptureQueriesContext(connection) as queries:
        _place("1", range(2))
    # then
    assert sum(f"INSERT INTO {OutboxEvent._meta.db_table} " in query["sql"] for query in queries.captured_queries) == 1
