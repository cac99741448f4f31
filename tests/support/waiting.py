"""Polling for a condition in tests that drive real processes (no fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], bool], timeout_s: float, *, kick: Callable[[], object] | None = None, every_s: float = 1.0
) -> bool:
    """Poll `condition` until it holds; `kick` (if any) runs before each poll, at most every `every_s`."""
    deadline = time.monotonic() + timeout_s
    last_kick = 0.0
    while time.monotonic() < deadline:
        if kick is not None and time.monotonic() - last_kick >= every_s:
            kick()
            last_kick = time.monotonic()
        if condition():
            return True
        time.sleep(0.2)
    return condition()
