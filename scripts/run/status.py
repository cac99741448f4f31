"""The figures of `make run`'s status line: readiness, outbox backlog, consumer lag.

Readiness comes from the server's `/readyz` (what a load balancer sees: the database and the
cache; Kafka is deliberately not in it, the outbox absorbs a broker outage); the backlog and the lag
are read here, in a thread of `make run` itself, with the project's own selectors, so that a
person can watch the pipeline drain without opening the dashboard.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

SAMPLE_EVERY_S = 5.0


def readiness(base_url: str) -> str:
    """One line, whatever the server answers: never a traceback."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=3) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read() or b"", error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"server: not answering ({reason})"
    try:
        body = json.loads(raw)
        failing = set(body["failing"])
    except (ValueError, KeyError, TypeError):
        first = raw.decode("utf-8", errors="replace").strip().splitlines()[:1]
        return (
            f"server: HTTP {status} from /readyz, not a readiness answer "
            f"({(first[0][:80] if first else 'empty body')}); see var/log/server.log"
        )
    names = list(READINESS_CHECKS) + sorted(failing - set(READINESS_CHECKS))
    return " ".join(f"{name}={'DOWN' if name in failing else 'ok'}" for name in names)


# What the server's /readyz checks (commerce/health.py, READINESS_CHECKS).
READINESS_CHECKS = ("database", "cache")


def is_ready(line: str) -> bool:
    return all(f"{name}=ok" in line for name in READINESS_CHECKS)


class PipelineFigures:
    """Samples the outbox backlog and the back office's lag every few seconds in a thread."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir
        self.text = "backlog=? lag=?"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline-figures", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            sample = self._setup()
        except Exception as exc:  # noqa: BLE001 - the status line says why, the stack runs on
            self.text = f"backlog=? lag=? ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
            return
        while not self._stop.is_set():
            try:
                self.text = sample()
            except Exception as exc:  # noqa: BLE001 - one failed sample: the next one may succeed
                self.text = f"backlog=? lag=? ({type(exc).__name__})"
            self._stop.wait(SAMPLE_EVERY_S)

    def _setup(self) -> Callable[[], str]:
        sys.path.insert(0, str(self.project_dir))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "commerce.settings")
        import logging

        import django

        django.setup()
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        from django.conf import settings
        from django.db import connection

        from commerce.dashboard import consumer_lag
        from outbox.housekeeping import outbox_status

        def sample() -> str:
            try:
                topics = outbox_status()
            finally:
                connection.close()  # no connection (nor SQLite lock) held between samples
            pending = sum(t.pending for t in topics)
            dead = sum(t.dead for t in topics)
            lag = consumer_lag(settings.BACKOFFICE_GROUP_ID)
            lag_text = str(sum(p.lag for p in lag)) if isinstance(lag, list) else "?"
            return f"outbox backlog={pending}{f' dead={dead}' if dead else ''} consumer lag={lag_text}"

        return sample
