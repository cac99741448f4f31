"""Shared set-up of the benchmarks: Django on PostgreSQL, fresh topics, memory readings."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.db.models import Model

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://commerce:commerce@127.0.0.1:5432/commerce_bench"


def django_setup() -> None:
    """Django on a database of the benchmarks' own (PostgreSQL; created and migrated if missing).

    BENCH_DATABASE_URL, never DATABASE_URL: the benchmarks empty the tables they measure.
    """
    sys.path.insert(0, str(PROJECT_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Production-like: with DEBUG on, Django keeps the last 9,000 queries of every connection,
    # which reads as memory growth of a long-running process.
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "benchmarks-only-not-a-secret")
    os.environ.setdefault("PAYMENT_CALLBACK_SECRET", "benchmarks-only")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
    os.environ["OUTBOX_KICK_ENABLED"] = "0"
    url = os.environ["DATABASE_URL"]
    if not url.startswith("postgres"):
        raise SystemExit(f"benchmarks run on PostgreSQL; DATABASE_URL is {url}")
    _database_ensure(url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _database_ensure(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    # Any database the role may open will do to run CREATE DATABASE: the project's own first.
    last_error: Exception | None = None
    for maintenance_db in (os.environ.get("BENCH_MAINTENANCE_DB", "commerce"), "postgres"):
        try:
            conn = psycopg.connect(
                host=parts.hostname,
                port=parts.port or 5432,
                user=parts.username,
                password=parts.password,
                dbname=maintenance_db,
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            last_error = exc
            continue
        with conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                say(f"creating database {name} ...")
                conn.execute(f'CREATE DATABASE "{name}"')
        return
    raise SystemExit(f"cannot reach PostgreSQL to create {name}: {last_error}")


def topics_fresh(streams: list[str] | None = None) -> dict[str, str]:
    from django.conf import settings

    from tests.support.kafka import kafka_topics_create

    suffix = uuid.uuid4().hex[:8]
    topics = {stream: f"bench-{suffix}-{stream}" for stream in (streams or list(settings.KAFKA_TOPICS))}
    names = list(topics.values()) + [f"{name}.dlq" for name in topics.values()]
    kafka_topics_create(",".join(settings.KAFKA_BOOTSTRAP_SERVERS), names, partitions=3)
    settings.KAFKA_TOPICS = topics
    return topics


def topics_delete(topics: dict[str, str]) -> None:
    from django.conf import settings

    from tests.support.kafka import kafka_topics_delete

    names = list(topics.values()) + [f"{name}.dlq" for name in topics.values()]
    kafka_topics_delete(",".join(settings.KAFKA_BOOTSTRAP_SERVERS), names)


def tables_empty(*models: type[Model]) -> None:
    """TRUNCATE the benchmark database's tables: DELETE would leave dead rows that slow down the
    next run until autovacuum passes (the database is the benchmarks' own)."""
    from django.db import connection

    names = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in models)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {names}")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_reset() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so a phase's peak excludes set-up."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples resident memory (VmRSS) in the background while a phase runs.

    `growth_mb` is the RSS at the end of the phase minus the RSS at 25% of it: the first quarter
    is warm-up (imports, connections, the first batch's buffers); a process whose memory is
    flat shows ~0 from there on, whatever the number of events.
    """

    def __init__(self, every_s: float = 0.05) -> None:
        self.samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self._started, rss_mb()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def at(self, fraction: float) -> float:
        """RSS (MB) of the first sample taken at or after `fraction` of the phase."""
        if not self.samples:
            return 0.0
        end = self.samples[-1][0]
        return next(mb for t, mb in self.samples if t >= fraction * end)

    @property
    def growth_mb(self) -> float:
        if len(self.samples) < 4:
            return 0.0
        return round(self.samples[-1][1] - self.at(0.25), 1)

    @property
    def peak_mb(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)


def say(message: str) -> None:
    print(message, flush=True)


def finish(figures: Mapping[str, object]) -> None:
    """The last line of every benchmark: one JSON object of its figures."""
    print(json.dumps(figures), flush=True)
