"""Liveness and readiness, for `make run`'s status line and a load balancer.

`/healthz` says the process answers. `/readyz` checks each dependency the pipeline needs (the
database, Kafka metadata, the Celery broker) and answers 503 naming the one that is down.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

CHECK_TIMEOUT_S = 2.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _kafka() -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        request_timeout_ms=int(CHECK_TIMEOUT_S * 1000),
        bootstrap_timeout_ms=int(CHECK_TIMEOUT_S * 1000),
        **settings.KAFKA_SECURITY,
    )
    try:
        admin.describe_cluster()
    finally:
        admin.close()


def _celery_broker() -> None:
    from commerce.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)


CHECKS: dict[str, Callable[[], None]] = {
    "database": _database,
    "kafka": _kafka,
    "celery_broker": _celery_broker,
}


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
            results[name] = f"{type(exc).__name__}: {exc}"[:300]
    failing = sorted(name for name, result in results.items() if result != "ok")
    body = {"status": "unavailable" if failing else "ok", "failing": failing, "checks": results}
    return JsonResponse(body, status=503 if failing else 200)
