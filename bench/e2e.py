"""End-to-end latency: commit of an order to its effect in the back office's projections.

Orders are placed through the services at a fixed rate for a fixed time, with a real Celery
worker (the relay) and a real `consume_events`, on PostgreSQL, Redis and Kafka. Latency is the
inbox's handled time minus the event's occurred_at. Two phases in the same run: the on-commit
kick on (the fast path), then beat polling alone (OUTBOX_POLL_INTERVAL). Targets with the kick:
p50 <= 50 ms, p99 <= 250 ms.

    .venv/bin/python bench/e2e.py [--quick] [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

from common import PROJECT_DIR, django_setup, finish, say, topics_delete, topics_fresh


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=100.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=None)
    options = parser.parse_args()
    seconds = options.seconds or (8.0 if options.quick else 30.0)
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")
    django_setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model

    from backoffice.models import InboxEntry
    from catalog.services import product_create
    from orders.services import OrderLineRequest, order_place
    from outbox.models import OutboxEvent
    from tests.support.processes import ManagedProcess, database_url_for_subprocess

    topics = topics_fresh()
    group = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    log_dir = PROJECT_DIR / "var" / "bench-e2e"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(settings.DATABASES["default"]),
               KAFKA_TOPIC_CATALOG=topics["catalog-events"], KAFKA_TOPIC_ORDERS=topics["order-events"],
               BACKOFFICE_GROUP_ID=group, LOG_LEVEL="WARNING", OUTBOX_POLL_INTERVAL="1",
               DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1")
    worker = ManagedProcess(name="worker", env=dict(env, LOG_LEVEL="INFO"), log_path=log_dir / "worker.log",
                            ready_text="ready.", argv=[
                                sys.executable, "-m", "celery", "-A", "commerce", "worker", "--beat",
                                "--concurrency=2", "--loglevel=INFO", "--purge",
                                f"--schedule={log_dir / 'celerybeat-schedule'}"])
    consumer = ManagedProcess(name="consumer", env=dict(env, LOG_LEVEL="INFO"), ready_text="consuming",
                              log_path=log_dir / "consumer.log",
                              argv=[sys.executable, "manage.py", "consume_events", "--batch-size", "500"])
    user, _ = get_user_model().objects.get_or_create(username="bench-e2e")
    products = [product_create(name=f"e2e {n}", price=Decimal("5.00"), stock=10_000_000) for n in range(50)]
    results: dict[str, dict[str, float]] = {}
    try:
        worker.start(timeout=90)
        consumer.start(timeout=90)
        time.sleep(3)  # the consumer joins its group
        for phase, kick in (("kick", True), ("poll_only", False)):
            settings.OUTBOX_KICK_ENABLED = kick
            say(f"{phase}: {options.rate:.0f} orders/s for {seconds:.0f} s ...")
            started = time.monotonic()
            first_seq = (OutboxEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0)
            placed = 0
            while time.monotonic() - started < seconds:
                due = started + placed / options.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                product = products[placed % len(products)]
                order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=1)])
                placed += 1
            achieved = placed / (time.monotonic() - started)
            event_ids = list(OutboxEvent.objects.filter(seq__gt=first_seq).values_list("event_id", flat=True))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                handled = InboxEntry.objects.filter(consumer_group=group, event_id__in=event_ids).count()
                if handled >= len(event_ids):
                    break
                time.sleep(0.5)
            latencies = [(h - o).total_seconds() * 1000 for h, o in InboxEntry.objects.filter(
                consumer_group=group, event_id__in=event_ids).values_list("handled_at", "occurred_at")]
            results[phase] = {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                              "p99": percentile(latencies, 0.99), "events": len(latencies),
                              "orders_per_s": achieved}
            say(f"  {len(latencies)}/{len(event_ids)} events, {achieved:.0f} orders/s achieved: "
                f"p50 {results[phase]['p50']:.0f} ms, p95 {results[phase]['p95']:.0f} ms, "
                f"p99 {results[phase]['p99']:.0f} ms")
    finally:
        worker.stop()
        consumer.stop()
        topics_delete(topics)
    kick = results["kick"]
    say(f"with the kick: p50 <= 50 ms {'PASS' if kick['p50'] <= 50 else 'FAIL'}, "
        f"p99 <= 250 ms {'PASS' if kick['p99'] <= 250 else 'FAIL'}")
    finish({"p50_ms": round(kick["p50"], 1), "p95_ms": round(kick["p95"], 1), "p99_ms": round(kick["p99"], 1),
            "poll_only_p50_ms": round(results["poll_only"]["p50"], 1),
            "poll_only_p99_ms": round(results["poll_only"]["p99"], 1),
            "orders_per_s": round(kick["orders_per_s"], 1), "events": kick["events"] + results["poll_only"]["events"]})


if __name__ == "__main__":
    main()
