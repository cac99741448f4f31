"""Long-running processes (the back-office consumer, the relay loop) freeze what they hold at start."""

from __future__ import annotations

import gc

_frozen = False


def startup_objects_frozen() -> int:
    """Move what the process holds before its work starts (Django, the modules, the settings)
    out of the cyclic garbage collector's reach, once per process; returns how many objects are
    frozen. Work allocates enough to trigger collections, and every full one walked all of it
    again: a quarter of the consumer's contract parse (docs/BACKOFFICE.md, "Where a batch's time
    goes"), and in the relay loop a 50-70 ms stop every few seconds at 100 events/s, which the
    events committed meanwhile waited out (bench/latency.py: max 76 ms, 8.8 ms once frozen).
    Objects made later are collected as usual; a frozen one is still freed when nothing refers
    to it."""
    global _frozen  # noqa: PLW0603 - once per process, not per caller
    if not _frozen:
        _frozen = True
        gc.collect()  # the garbage there is now is not frozen with the rest
        gc.freeze()
    return gc.get_freeze_count()
