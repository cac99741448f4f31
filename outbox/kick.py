"""The Celery fast path: after a commit, ask the relay to drain now instead of at the next beat
tick. Used when OUTBOX_WAKEUP resolves to `celery` (SQLite, or chosen); PostgreSQL's default is
the NOTIFY wake-up heard by the relay loop (outbox/wakeup.py, outbox/relay/listen.py).

Coalesced across processes: a kick is a message on the relay's own queue (OUTBOX_CELERY_QUEUE),
sent only when no kick is already waiting. The kick marks itself pending in the shared cache;
the drain clears the mark as it starts (`relay_kick_taken`), before it claims rows, so a commit
that found the mark set is covered by the drain still to come, and a commit after the drain
started sends the next kick. A burst of commits is one message, whatever the number of
processes, and kicks cannot pile up in the broker (they did on the file transport, hundreds in
front of the domain reactions). A mark left by a lost kick expires after KICK_PENDING_TTL_S.

Debounced per process as well, leading and trailing: the first commit of a window kicks at once,
and a later commit in the window schedules one more kick at the window's end. Losing a kick (a
crash right after the commit, a broker hiccup) only delays the event to the next beat drain.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from outbox.wakeup import wakeup_mode

logger = logging.getLogger(__name__)

KICK_PENDING_KEY = "outbox:relay-kick-pending"
KICK_PENDING_TTL_S = 10

_lock = threading.Lock()


class _Window:
    """The debounce window of this process's kicks (read and written under `_lock`)."""

    ends_at = 0.0
    trailing_scheduled = False


_window = _Window()


def _cache_is_shared() -> bool:
    # A per-process cache cannot see another process's mark nor the drain's clearing of it.
    backend = settings.CACHES["default"]["BACKEND"]
    return not backend.endswith(("locmem.LocMemCache", "dummy.DummyCache"))


def _pending_mark() -> bool:
    """Mark a kick pending; False when one already is (the waiting drain covers this commit)."""
    if not _cache_is_shared():
        return True
    try:
        return bool(cache.add(KICK_PENDING_KEY, 1, timeout=KICK_PENDING_TTL_S))
    except Exception:  # noqa: BLE001 - without the cache, kick anyway (a duplicate is harmless)
        return True


def relay_kick_taken() -> None:
    """Called by the drain task as it starts: commits from now on need a kick of their own."""
    if not _cache_is_shared():
        return
    try:
        cache.delete(KICK_PENDING_KEY)
    except Exception as exc:  # noqa: BLE001 - the mark expires on its own
        logger.warning("relay kick mark not cleared", extra={"error": repr(exc)})


def _kick() -> None:
    from outbox.tasks import relay_drain_task

    now = time.monotonic()
    with _lock:
        if now >= _window.ends_at:
            _window.ends_at = now + settings.OUTBOX_KICK_DEBOUNCE
            _window.trailing_scheduled = False
            countdown = None
        elif not _window.trailing_scheduled:
            _window.trailing_scheduled = True
            countdown = _window.ends_at - now
        else:
            return
    if not _pending_mark():
        if countdown is not None:
            # Not scheduled after all: a later commit in this window may need it.
            with _lock:
                _window.trailing_scheduled = False
        return
    try:
        if countdown is None:  # the window's first commit: at once
            relay_drain_task.apply_async(retry=False)
        else:
            relay_drain_task.apply_async(countdown=countdown, retry=False)
    except Exception as exc:  # noqa: BLE001 - a lost kick is covered by the beat drain
        relay_kick_taken()  # no kick waits: the next commit must not be held back by the mark
        logger.warning("relay kick not sent; the beat drain will publish", extra={"error": repr(exc)})


def relay_kick_on_commit(*, using: str = "default") -> None:
    # With the NOTIFY wake-up the relay loop hears the commit itself: a kick would drain twice.
    if settings.OUTBOX_KICK_ENABLED and wakeup_mode(using) == "celery":
        transaction.on_commit(_kick, using=using)
