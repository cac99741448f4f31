"""A graceful stop of the process (Celery's warm shutdown, SIGTERM to `outbox drain`): the drain
sends nothing more, writes back what the broker acknowledged and releases every other claim, so
another relay may take those keys at once instead of after `OUTBOX_CLAIM_TTL`."""

from __future__ import annotations

import threading

_stop = threading.Event()


def relay_stop_request() -> None:
    """Ask the running drain (if any) and every later one in this process to stop. Safe to call
    from a signal handler."""
    _stop.set()


def relay_stop_requested() -> bool:
    return _stop.is_set()


def relay_stop_clear() -> None:
    """Tests only: a process that asked to stop and keeps running."""
    _stop.clear()
