"""How each process serves its metrics.

- The API: `metrics_view` at `/metrics`, for a bearer token (`METRICS_TOKEN`) or a staff session.
- A Celery worker: one HTTP port (`WORKER_METRICS_PORT`) in the worker's main process, serving
  the sum of its prefork children through the client's multiprocess mode (`worker.py`).
- `consume_events` (or a relay loop): `metrics_http_start(port=...)` on its own port.

The database figures (pending and dead outbox rows, the oldest pending age, open dead letters)
are read at scrape time by `DatabaseCollector`, served by the API and the worker: the relay's
backlog stays visible while one of them is down. Alerts take `max by (topic)` over targets.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class DatabaseCollector(Collector):
    """Backlog and dead-row gauges per topic, read from the database at each scrape.

    Every configured topic has a sample, 0 when it has no row, so that "the backlog returned to
    0" is a value and not a missing series. `close_connection` is for exporter threads, which
    would otherwise keep one idle connection each.
    """

    def __init__(self, *, close_connection: bool = False) -> None:
        self.close_connection = close_connection

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily("outbox_pending_rows", "Outbox rows waiting to be published.", labels=["topic"])
        dead = GaugeMetricFamily(
            "outbox_dead_rows", "Outbox rows that will not be sent again until requeued.", labels=["topic"]
        )
        oldest = GaugeMetricFamily(
            "outbox_oldest_pending_age_seconds", "Age of the oldest pending outbox row (0 when none).", labels=["topic"]
        )
        letters = GaugeMetricFamily(
            "backoffice_dead_letters_open", "Dead letters of the back office not redriven yet.", labels=["topic"]
        )
        up = GaugeMetricFamily(
            "commerce_database_scrape_success", "1 when the database figures of this scrape could be read."
        )
        try:
            figures = _database_figures()
        except DatabaseError as exc:
            logger.warning("metrics: database figures unavailable", extra={"error": repr(exc)})
            up.add_metric([], 0)
            yield up
            return
        finally:
            if self.close_connection:
                connection.close()
        for topic, row in sorted(figures.items()):
            pending.add_metric([topic], row["pending"])
            dead.add_metric([topic], row["dead"])
            oldest.add_metric([topic], row["oldest_age"])
            letters.add_metric([topic], row["dead_letters"])
        up.add_metric([], 1)
        yield from (pending, dead, oldest, letters, up)


def _database_figures() -> dict[str, dict[str, float]]:
    from backoffice.models import DeadLetter
    from outbox.models import OutboxEvent

    now = timezone.now()
    figures = {
        topic: {"pending": 0.0, "dead": 0.0, "oldest_age": 0.0, "dead_letters": 0.0}
        for topic in settings.KAFKA_TOPICS.values()
    }

    def of(topic: str) -> dict[str, float]:
        return figures.setdefault(topic, {"pending": 0.0, "dead": 0.0, "oldest_age": 0.0, "dead_letters": 0.0})

    pending, dead = OutboxEvent.Status.PENDING, OutboxEvent.Status.DEAD
    rows = (
        OutboxEvent.objects.filter(status__in=[pending, dead])
        .values("topic", "status")
        .annotate(rows=Count("seq"), oldest=Min("created_at"))
    )
    for row in rows:
        figure = of(row["topic"])
        if row["status"] == pending:
            figure["pending"] = float(row["rows"])
            figure["oldest_age"] = max(0.0, (now - row["oldest"]).total_seconds())
        else:
            figure["dead"] = float(row["rows"])
    letters = DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).values("topic").annotate(rows=Count("id"))
    for letter in letters:
        of(letter["topic"])["dead_letters"] = float(letter["rows"])
    return figures


class _RegistryView(Collector):
    """Another registry's collectors, served next to the database collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR when this process runs in the client's multiprocess mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition_registry(*, database: bool, close_connection: bool = False) -> CollectorRegistry:
    """What one scrape of this process returns: its metrics (summed over the processes sharing
    PROMETHEUS_MULTIPROC_DIR in multiprocess mode), plus the database figures if asked."""
    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(_RegistryView(REGISTRY))
    if database:
        registry.register(DatabaseCollector(close_connection=close_connection))
    return registry


def metrics_http_start(*, port: int, addr: str = "0.0.0.0", database: bool = False) -> Any:
    """Serve this process's metrics on `port` from a daemon thread; returns the server (or
    None when the port is 0, the off switch). A port already taken is logged, never fatal: the
    process's work matters more than its metrics."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(
            port, addr=addr, registry=exposition_registry(database=database, close_connection=True)
        )
    except OSError as exc:
        logger.error("metrics exporter not started", extra={"port": port, "error": repr(exc)})
        return None
    logger.info("metrics exporter listening", extra={"port": port})
    return server


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The API's metrics: `Authorization: Bearer <METRICS_TOKEN>` (Prometheus), or a staff
    session (a person with a browser). Anything else gets 401 and no figures."""
    if not _authorized(request):
        response = HttpResponse(
            "metrics need a bearer token (METRICS_TOKEN) or a staff session\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = generate_latest(exposition_registry(database=True))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
