"""Run a Python module (`-m` style) with this process's clock offset by CLOCK_OFFSET_S seconds.

    CLOCK_OFFSET_S=5 python -m tests.fault.skewed_clock celery -A commerce worker ...

The fault campaign's "skewed clock on one process": every time Django takes from
`django.utils.timezone.now()` (an event's `occurred_at`, `auto_now` columns, the relay's and the
reconciliation's "now") is off by the offset in this process and its forked children, as on a
host whose clock drifted. The database's clock and the other processes' are untouched.
"""

from __future__ import annotations

import os
import runpy
import sys
from datetime import timedelta


def _install(offset_s: float) -> None:
    from django.utils import timezone

    offset = timedelta(seconds=offset_s)
    real_now = timezone.now
    # Replaced before any project module is imported, so none holds the real one.
    timezone.now = lambda: real_now() + offset


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: CLOCK_OFFSET_S=<seconds> python -m tests.fault.skewed_clock MODULE [ARGS...]")
    _install(float(os.environ.get("CLOCK_OFFSET_S", "0")))
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
