"""SQLite has no row locks: one drain at a time per database holds a file lock."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection


@contextmanager
def single_relay_on_sqlite() -> Iterator[bool]:
    """Yields whether this drain may run: always on PostgreSQL; on SQLite, if it got the lock
    (`var/outbox-relay.lock`): a second drain returns at once instead of waiting."""
    if connection.vendor != "sqlite":
        yield True
        return
    lock_path = settings.VAR_DIR / "outbox-relay.lock"
    with open(lock_path, "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
