"""Celery worker hooks: metrics of a prefork worker through the client's multiprocess mode.

Why multiprocess mode rather than one exporter per child: the children are numbered and
replaced by the pool (a crash, max-tasks-per-child), so per-child ports would come and go and
every replacement would restart its counters from zero; one port per worker, summed over its
children by prometheus_client, stays put, and counters of a dead child stay in the sum.

The worker needs PROMETHEUS_MULTIPROC_DIR in its environment before it starts (the client
chooses its storage at import), a directory of its own (not shared with another worker or with
consume_events). At start the files of earlier runs are deleted; a child that exits has its
live gauges removed. Without the variable the exporter still starts, but serves the main
process only: an error says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import signals

logger = logging.getLogger(__name__)


@signals.celeryd_init.connect
def _multiprocess_dir_reset(**_: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    own = f"_{os.getpid()}.db"
    for stale in directory.glob("*.db"):
        if not stale.name.endswith(own):
            stale.unlink(missing_ok=True)


@signals.worker_ready.connect
def _exporter_start(**_: Any) -> None:
    from django.conf import settings

    from commerce.observability.exporters import metrics_http_start, multiprocess_dir

    port = settings.WORKER_METRICS_PORT
    if port and not multiprocess_dir():
        logger.error(
            "PROMETHEUS_MULTIPROC_DIR is not set: the worker's metrics port serves its "
            "main process only, not the prefork children that run the tasks"
        )
    metrics_http_start(port=port, database=True)


@signals.worker_process_shutdown.connect
def _child_gone(pid: int | None = None, **_: Any) -> None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())
