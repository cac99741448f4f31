"""A database error that says the database is away, busy or not yet migrated is retried on the
same batch, never taken for a value it refuses: no good event is dead-lettered for it.

The bulk statements of the PostgreSQL path (backoffice/bulk.py) run on the driver's own cursor,
so their errors are psycopg's, not Django's wrappers: the SQLSTATE is read from either.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from backoffice.isolation import batch_apply_isolating, error_is_transient, records_parse
from backoffice.models import DeadLetter, InboxEntry, ProductMetrics
from backoffice.projections import PoisonRecord
from tests.backoffice.stream import consumed, like, view


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.LockNotAvailable,  # lock_timeout
        psycopg.errors.QueryCanceled,  # statement_timeout
        psycopg.errors.DeadlockDetected,
        psycopg.errors.SerializationFailure,
        psycopg.errors.UndefinedColumn,  # the consumer deployed before `migrate`
        psycopg.errors.UndefinedTable,
        psycopg.errors.AdminShutdown,
        psycopg.errors.InsufficientPrivilege,
    ],
)
def test_the_drivers_own_error_of_a_database_away_or_busy_is_transient(error):
    assert error_is_transient(error("from the bulk statement's cursor"))


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.NumericValueOutOfRange,
        psycopg.errors.StringDataRightTruncation,
        psycopg.errors.InvalidTextRepresentation,
        psycopg.errors.UniqueViolation,
        psycopg.errors.ProgramLimitExceeded,
    ],
)
def test_the_drivers_own_error_of_a_refused_value_is_the_datas(error):
    assert not error_is_transient(error("from the bulk statement's cursor"))


def test_a_driver_error_without_a_sqlstate_is_the_connection_lost():
    # libpq's own errors (the server closed the connection) carry no SQLSTATE.
    assert error_is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_lock_timeout_on_a_projection_row_is_retried_not_dead_lettered():
    if connection.vendor != "postgresql":
        pytest.fail("the bulk statements are PostgreSQL's: run with DATABASE_URL=postgres://...")
    # given a product's metrics row locked by another session, and a lock_timeout on ours
    ProductMetrics.objects.create(product_id="3")
    records = consumed([view("3"), like("3", True), view("3")])
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    holder = psycopg.connect(**params)
    forwarded: list[PoisonRecord] = []
    try:
        holder.execute("SELECT 1 FROM backoffice_productmetrics WHERE product_id = '3' FOR UPDATE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")
        # when the batch is applied while the lock is held
        with pytest.raises(psycopg.errors.LockNotAvailable) as raised:
            batch_apply_isolating(group="g", batch=records_parse(records), forward=forwarded.extend)
        # then the error goes to the caller as transient (it retries the same batch) and
        # nothing is dead-lettered or applied
        assert error_is_transient(raised.value), raised.value
        assert forwarded == []
        assert not DeadLetter.objects.exists()
        assert not InboxEntry.objects.exists()
    finally:
        holder.rollback()
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    # and once the lock is gone the same batch is applied, every event once
    outcome = batch_apply_isolating(group="g", batch=records_parse(records), forward=forwarded.extend)
    assert (outcome.applied, outcome.dead_lettered) == (3, 0)
    metrics = ProductMetrics.objects.get(product_id="3")
    assert (metrics.view_count, metrics.like_count) == (2, 1)
