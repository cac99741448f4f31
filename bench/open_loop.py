"""The writer of the latency benchmarks: events committed on an open-loop schedule.

Event i is due at i / rate seconds from the start; a writer that falls behind commits what is
due in one transaction (at most `max_per_transaction` events), so it never waits for the relay
and a slow commit shows as latency, not as a lower rate. Imported by bench/latency.py and by
bench/peer_child.py (which runs in the peer's own venv: no Django or project import here).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def commit_on_schedule(
    *, rate: float, seconds: float, max_per_transaction: int, commit: Callable[[int, int], list[str]]
) -> tuple[dict[str, float], float, float]:
    """`commit(first, count)` commits events `first` .. `first + count - 1` in one transaction
    and returns their ids. Returns (event id -> time.monotonic() once its COMMIT returned,
    the rate achieved, events per transaction)."""
    total = int(rate * seconds)
    committed: dict[str, float] = {}
    transactions = 0
    started = time.monotonic()
    sent = 0
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now - started) * rate) + 1) - sent
        if due <= 0:
            time.sleep(max(0.0, started + sent / rate - now))
            continue
        ids = commit(sent, min(due, max_per_transaction))
        at = time.monotonic()
        for event_id in ids:
            committed[event_id] = at
        sent += len(ids)
        transactions += 1
    elapsed = time.monotonic() - started
    return committed, total / elapsed, total / transactions
