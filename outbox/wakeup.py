"""How the relay learns that a row committed: `OUTBOX_WAKEUP` resolved for a database alias.

`notify` (PostgreSQL only): the recording transaction sends `NOTIFY outbox_wakeup` (PostgreSQL
delivers it at commit, drops it on rollback) and `manage.py relay_loop` (outbox/relay/listen.py)
drains the moment it hears it; the Celery kick is skipped, it would only double the work.
`celery`: the on-commit kick through the Celery broker (outbox/kick.py), the only fast path
SQLite has. `auto` is `notify` on PostgreSQL and `celery` elsewhere. Either way the beat drain
stays the safety net for a wake-up that is lost.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connections

CHANNEL = "outbox_wakeup"
MODES = ("auto", "notify", "celery")


def wakeup_mode(using: str = "default") -> str:
    """`notify` or `celery`: what this alias's commits use to wake the relay."""
    mode = settings.OUTBOX_WAKEUP.strip().lower()
    if connections[using].vendor != "postgresql":
        return "celery"  # LISTEN/NOTIFY is PostgreSQL's; a `notify` elsewhere falls back
    return "celery" if mode == "celery" else "notify"
