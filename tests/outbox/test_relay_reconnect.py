"""Which database errors the relay's work is done again after (outbox/relay/reconnect.py), and
how: on a new session when the session is gone or reached a standby, on the same one when the
server gave up on the statement, never for an error of the statement itself."""

from __future__ import annotations

import time

import psycopg.errors
import pytest
from django.db import DataError, IntegrityError, InterfaceError, InternalError, OperationalError, ProgrammingError

from outbox.relay import reconnect
from outbox.relay.reconnect import Retry, done_again_until, retry_for


def _wrapped(django_error: type[Exception], driver_error: Exception) -> Exception:
    """As Django raises it: its own class, the driver's error as the cause."""
    error = django_error(str(driver_error))
    error.__cause__ = driver_error
    return error


@pytest.mark.parametrize(
    "error, retry",
    [
        (_wrapped(OperationalError, psycopg.errors.AdminShutdown("terminating connection")), Retry.NEW_SESSION),
        (_wrapped(OperationalError, psycopg.errors.CannotConnectNow("starting up")), Retry.NEW_SESSION),
        (_wrapped(OperationalError, psycopg.errors.ConnectionFailure("lost")), Retry.NEW_SESSION),
        (_wrapped(InternalError, psycopg.errors.ReadOnlySqlTransaction("a standby")), Retry.NEW_SESSION),
        (_wrapped(OperationalError, psycopg.OperationalError("the connection is closed")), Retry.NEW_SESSION),
        (InterfaceError("connection already closed"), Retry.NEW_SESSION),
        (OperationalError("database is locked"), Retry.NEW_SESSION),  # SQLite: no SQLSTATE
        (_wrapped(OperationalError, psycopg.errors.DeadlockDetected("deadlock")), Retry.SAME_SESSION),
        (_wrapped(OperationalError, psycopg.errors.LockNotAvailable("lock timeout")), Retry.SAME_SESSION),
        (_wrapped(OperationalError, psycopg.errors.QueryCanceled("statement timeout")), Retry.SAME_SESSION),
        (_wrapped(OperationalError, psycopg.errors.SerializationFailure("serialize")), Retry.SAME_SESSION),
        (_wrapped(ProgrammingError, psycopg.errors.UndefinedColumn("no column")), None),
        (_wrapped(DataError, psycopg.errors.NumericValueOutOfRange("out of range")), None),
        (_wrapped(IntegrityError, psycopg.errors.UniqueViolation("duplicate")), None),
        (ValueError("not the database's"), None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_the_errors_the_relay_does_its_database_work_again_after(error, retry):
    assert retry_for(error) is retry


def test_work_is_done_again_on_a_new_session_until_it_succeeds(monkeypatch):
    dropped: list[int] = []
    monkeypatch.setattr(reconnect, "new_session", lambda: dropped.append(1))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    attempts: list[int] = []

    def work(attempt: int) -> str:
        attempts.append(attempt)
        if attempt < 3:
            raise _wrapped(OperationalError, psycopg.errors.AdminShutdown("terminating connection"))
        return "written"

    assert done_again_until(work, until=time.monotonic() + 60, what="test") == "written"
    assert (attempts, len(dropped)) == ([1, 2, 3], 2)


def test_work_is_done_once_without_a_deadline_or_for_an_error_of_its_own():
    def lost(attempt: int) -> None:
        raise _wrapped(OperationalError, psycopg.errors.AdminShutdown("terminating connection"))

    def refused(attempt: int) -> None:
        raise _wrapped(DataError, psycopg.errors.NumericValueOutOfRange("out of range"))

    with pytest.raises(OperationalError):
        done_again_until(lost, until=None, what="test")
    with pytest.raises(DataError):
        done_again_until(refused, until=time.monotonic() + 60, what="test")


@pytest.mark.django_db
def test_nothing_is_done_again_inside_a_transaction_of_the_callers():
    # pytest-django's test transaction: the session is not the relay's to drop
    lost = _wrapped(OperationalError, psycopg.errors.AdminShutdown("terminating connection"))
    assert retry_for(lost) is None
