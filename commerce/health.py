"""Liveness, readiness, and the pipeline's health, each for its own audience.

- `/healthz`: the process answers (liveness).
- `/readyz`: what the API needs to serve a request, the database and the cache, checked cheaply
  (a load balancer polls it). Kafka is deliberately not in it: a broker outage is what the
  outbox absorbs, and taking the API out of rotation for it would turn that outage into one of
  the API. Anonymous callers learn which check failed, never an exception's text (it is logged).
- `/health/relay` (staff, or `Authorization: Bearer <HEALTH_TOKEN>` for monitoring) and
  `manage.py relay_health`: whether the relay can reach the broker, and the outbox backlog.
- `/health/backoffice` (same access) and `manage.py backoffice_health`: the consumer group's lag
  and its last progress (the newest inbox entry: the consumer's heartbeat as seen from outside).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

logger = logging.getLogger(__name__)

BROKER_CHECK_TIMEOUT_S = 2.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _cache() -> None:
    key = "readyz:probe"
    token = uuid.uuid4().hex
    cache.set(key, token, timeout=30)
    if cache.get(key) != token:
        raise RuntimeError("the cache did not return what was just stored")


READINESS_CHECKS: dict[str, Callable[[], None]] = {"database": _database, "cache": _cache}


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    failing = []
    for name, check in READINESS_CHECKS.items():
        try:
            check()
        except Exception:  # any failure means "not ready"; the text goes to the log
            logger.warning("readiness check failed", extra={"check": name}, exc_info=True)
            failing.append(name)
    body = {"status": "unavailable" if failing else "ok", "failing": failing}
    return JsonResponse(body, status=503 if failing else 200)


def broker_reachable() -> bool:
    """Whether the Kafka cluster answers a metadata request within a short timeout."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            request_timeout_ms=int(BROKER_CHECK_TIMEOUT_S * 1000),
            bootstrap_timeout_ms=int(BROKER_CHECK_TIMEOUT_S * 1000),
            **settings.KAFKA_SECURITY,
        )
    except Exception:  # NoBrokersAvailable and the like: unreachable
        logger.info("broker unreachable", exc_info=True)
        return False
    try:
        admin.describe_cluster()
        return True
    except Exception:
        logger.info("broker unreachable", exc_info=True)
        return False
    finally:
        admin.close()


def relay_health() -> dict[str, Any]:
    """The relay's view: broker reachability and, per topic, the outbox backlog.

    Healthy when the broker answers and no pending row is older than OUTBOX_STALE_SECONDS.
    """
    from outbox.housekeeping import outbox_status

    now = timezone.now()
    topics = [
        {
            "topic": row.topic,
            "pending": row.pending,
            "dead": row.dead,
            "oldest_pending_age_s": row.oldest_pending_age_s(now),
            "published_last_minute": row.published_last_minute,
        }
        for row in outbox_status()
    ]
    reachable = broker_reachable()
    stale = [row["topic"] for row in topics if (row["oldest_pending_age_s"] or 0) > settings.OUTBOX_STALE_SECONDS]
    problems = ([] if reachable else ["broker unreachable"]) + [f"{topic}: backlog stale" for topic in stale]
    return {
        "status": "unhealthy" if problems else "ok",
        "problems": problems,
        "broker": "ok" if reachable else "unreachable",
        "outbox": topics,
    }


def backoffice_health() -> dict[str, Any]:
    """The back office's consumer, seen from outside: its group's lag and its last progress.

    Unhealthy when Kafka cannot be read, or when events wait (lag) and nothing was handled for
    BACKOFFICE_STALE_SECONDS: a consumer that is down, stuck or too slow.
    """
    from backoffice.models import InboxEntry
    from commerce.dashboard import consumer_lag

    group = settings.BACKOFFICE_GROUP_ID
    lag = consumer_lag(group)
    last = (
        InboxEntry.objects.filter(consumer_group=group)
        .order_by("-handled_at")
        .values_list("handled_at", flat=True)
        .first()
    )
    idle_s = (timezone.now() - last).total_seconds() if last else None
    if isinstance(lag, str):
        logger.info("back-office lag unreadable", extra={"error": lag[:300]})
        return {
            "status": "unhealthy",
            "problems": ["kafka unavailable"],
            "group": group,
            "lag": None,
            "last_handled_at": last,
            "idle_s": idle_s,
        }
    total = sum(partition.lag for partition in lag)
    stuck = total > 0 and (idle_s is None or idle_s > settings.BACKOFFICE_STALE_SECONDS)
    return {
        "status": "unhealthy" if stuck else "ok",
        "problems": [f"lag {total} with no progress"] if stuck else [],
        "group": group,
        "lag": total,
        "last_handled_at": last,
        "idle_s": idle_s,
    }


def _monitoring_allowed(request: HttpRequest) -> bool:
    if request.user.is_authenticated and request.user.is_staff:
        return True
    token = settings.HEALTH_TOKEN
    presented = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())


def relay_health_view(request: HttpRequest) -> JsonResponse:
    if not _monitoring_allowed(request):
        return JsonResponse({"detail": "staff or monitoring token required"}, status=403)
    body = relay_health()
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


def backoffice_health_view(request: HttpRequest) -> JsonResponse:
    if not _monitoring_allowed(request):
        return JsonResponse({"detail": "staff or monitoring token required"}, status=403)
    body = backoffice_health()
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)
