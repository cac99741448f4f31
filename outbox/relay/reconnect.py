"""The relay's database work done again when the database gave up on it, on a new session when
the one it ran on was lost.

A PostgreSQL restart, a failover or a terminated backend ends the drain's session while it holds
batches: claimed under its lease token, handed to the producer, perhaps acknowledged. Their
write-back is worth doing again while the lease lasts: left leased, their keys would wait out the
lease, and each row would be taken over as abandoned (an attempt charged, sent alone, sent
twice). The token fences every statement, so doing it again is safe.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import Error, InterfaceError, OperationalError, connection

logger = logging.getLogger("outbox.relay")

T = TypeVar("T")

# The session is gone, or is no longer on a primary: a connection exception (class 08), the
# server shutting down or not yet accepting sessions (57P01-57P03), a read-only transaction (a
# new session that reached a standby during a failover).
_NEW_SESSION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "25006"})
# The server gave up on the statement and rolled its transaction back; the session is fine:
# serialization failure, deadlock, lock timeout, statement timeout or cancel.
_SAME_SESSION_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})

_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 1.0


class Retry(enum.Enum):
    NEW_SESSION = "on a new session"
    SAME_SESSION = "on the same session"


def retry_for(error: BaseException) -> Retry | None:
    """How the relay's work that failed with `error` may be done again, or None: an error of the
    statement itself (it would fail again), or one inside a transaction of the caller's (whose
    session is not the relay's to drop)."""
    if not isinstance(error, Error) or connection.in_atomic_block:
        return None
    sqlstate = getattr(error.__cause__, "sqlstate", None)  # the driver's error, under Django's
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate.startswith("08") or sqlstate in _NEW_SESSION_SQLSTATES:
            return Retry.NEW_SESSION
        return Retry.SAME_SESSION if sqlstate in _SAME_SESSION_SQLSTATES else None
    # No SQLSTATE: libpq's own (the connection lost, closed), or SQLite's "database is locked".
    return Retry.NEW_SESSION if isinstance(error, OperationalError | InterfaceError) else None


def new_session() -> None:
    """Drop the current session; Django opens a new one for the next statement."""
    with contextlib.suppress(Error):
        connection.close()


def done_again_until(work: Callable[[int], T], *, until: float | None, what: str) -> T:
    """`work(attempt)` (attempt 1, 2, ...), done again after an error `retry_for` allows, until
    the monotonic time `until` (None: once). A stop of the process does not cut it short: what
    a stopping drain holds is written back (outbox/relay/stopping.py), and `until` bounds it."""
    delay = _FIRST_DELAY_S
    attempt = 1
    while True:
        try:
            return work(attempt)
        except Error as exc:  # Django's: InterfaceError is not a DatabaseError
            retry = retry_for(exc)
            if until is None or retry is None or time.monotonic() + delay >= until:
                raise
            logger.warning(
                "relay database work failed, done again",
                extra={
                    "work": what,
                    "retry": retry.value,
                    "error": f"{type(exc).__name__}: {exc}",
                    "retry_in_s": delay,
                },
            )
            if retry is Retry.NEW_SESSION:
                new_session()
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)
            attempt += 1
