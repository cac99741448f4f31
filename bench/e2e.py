"""End-to-end latency: commit of an order to its effect committed in the back office.

Orders are placed through the services at a fixed rate (200/s, from --writers threads, each on
an open-loop schedule of its own and its own products) for a fixed time, with the relay
as `make run` runs it and a real back-office consumer, on PostgreSQL, Redis and Kafka. The relay
is the NOTIFY-woken relay loop (`manage.py relay_loop`) when the project has it, with the Celery
worker and beat as the safety net; without it, the worker woken by the on-commit kick.

Latency of an event: the time.time() right after the back office's transaction committed (the
consumer calls a hook after commit; the inbox's `handled_at` is stamped before the batch is
written and would understate it) minus the time.time() right after the order's COMMIT returned
(an on_commit hook of the writer, for the pending outbox rows of its order and product). Also
printed: the same from the events' `occurred_at`, stamped inside the transaction (so it counts
the rest of the order's transaction too). One machine, one clock. The outbox and the back
office's tables are emptied first (the other benchmarks do too). The consumer runs with the
production settings (BACKOFFICE_*), printed.
Targets: p50 <= 10 ms, p99 <= 40 ms.

    .venv/bin/python bench/e2e.py [--quick] [--rate 200] [--seconds 30] [--with-poll-only]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from common import PROJECT_DIR, django_setup, finish, say, tables_empty, topics_delete, topics_fresh


def note_commit(committed_at: dict[str, float], event_ids: list[str]) -> None:
    now = time.time()
    for event_id in event_ids:
        committed_at.setdefault(event_id, now)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def consumer_child(applied_log: Path) -> None:
    """The back office as `consume_events` runs it, writing each applied event's id, its
    occurred_at and the time of its batch's commit to `applied_log`."""
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()
    from django.conf import settings

    from backoffice.consumer import EventConsumer

    log = open(applied_log, "a", buffering=1 << 16)  # noqa: SIM115 - flushed per batch, closed at exit
    polled_at = [0.0]

    def applied(events: list, committed_at: float, records: dict) -> None:
        # The record's timestamp is the producer's (the relay's send): from it to the commit is
        # the back office's own leg (fetch, parse, apply, commit), split at the poll that
        # returned the batch.
        log.writelines(
            f"{e.event_id} {e.occurred_at.timestamp():.6f} {committed_at:.6f} "
            f"{records[(e.topic, e.partition, e.offset)].timestamp / 1000:.3f} {polled_at[0]:.6f}\n"
            for e in events
        )
        log.flush()

    consumer = EventConsumer(
        topics=list(settings.KAFKA_TOPICS.values()), group_id=settings.BACKOFFICE_GROUP_ID, on_applied=applied
    )
    client_poll = consumer.consumer.poll

    def poll_timed(*, timeout_ms: int, max_records: int | None = None) -> dict:
        polled = client_poll(timeout_ms=timeout_ms, max_records=max_records)
        polled_at[0] = time.time()
        return polled

    consumer.consumer.poll = poll_timed  # type: ignore[method-assign,assignment]  # the benchmark's clock only
    consumer.install_signal_handlers()
    print(f"consuming {consumer.topics}", flush=True)
    try:
        consumer.run()
    finally:
        consumer.close()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument(
        "--with-poll-only", action="store_true", help="a second phase with the beat's polling alone (no wake-up)"
    )
    parser.add_argument(
        "--writers", type=int, default=4, help="threads placing orders, each at rate / writers (one cannot keep 200/s)"
    )
    parser.add_argument("--consumer-child", type=Path, default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.consumer_child:
        consumer_child(options.consumer_child)
        return
    seconds = options.seconds or (8.0 if options.quick else 30.0)
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")
    django_setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connections, transaction

    def event_ids_of_this_transaction(*aggregates: object) -> list[str]:
        """The pending outbox rows of the order and of the writer's product (each writer has
        products of its own): this transaction's, and maybe an earlier one's not yet sent,
        whose commit time is already noted (`setdefault` below keeps the first)."""
        return [
            str(event_id)
            for event_id in OutboxEvent.objects.filter(
                aggregateid__in=[str(aggregate) for aggregate in aggregates], status="pending"
            ).values_list("event_id", flat=True)
        ]

    from catalog.services import product_create
    from orders.services import OrderLineRequest, order_place
    from outbox.models import OutboxEvent
    from tests.support.processes import ManagedProcess, database_url_for_subprocess
    from versions import versions_detected

    versions = versions_detected()
    say("versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    relay_loop = (PROJECT_DIR / "outbox" / "management" / "commands" / "relay_loop.py").exists()
    wakeup = "relay_loop (NOTIFY at commit)" if relay_loop else "Celery on-commit kick (no relay loop on this branch)"
    consumer_settings = {
        "batch_size": settings.BACKOFFICE_BATCH_SIZE,
        "fetch_max_wait_ms": settings.BACKOFFICE_FETCH_MAX_WAIT_MS,
        "poll_timeout_ms": settings.BACKOFFICE_POLL_TIMEOUT_MS,
    }
    say(f"relay: {wakeup}; consumer settings: {consumer_settings}")
    topics = topics_fresh()
    # The outbox and the back office's tables start empty, as in the other benchmarks: a run's
    # figures do not depend on how many runs came before it.
    from backoffice.models import DeadLetter, EventLog, InboxEntry, OrderLedger, ProductMetrics

    tables_empty(OutboxEvent, InboxEntry, EventLog, OrderLedger, ProductMetrics, DeadLetter)
    group = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    log_dir = PROJECT_DIR / "var" / "bench-e2e"
    log_dir.mkdir(parents=True, exist_ok=True)
    applied_log = log_dir / f"applied-{group}.txt"
    env = dict(
        os.environ,
        DATABASE_URL=database_url_for_subprocess(settings.DATABASES["default"]),
        KAFKA_TOPIC_CATALOG=topics["catalog-events"],
        KAFKA_TOPIC_ORDERS=topics["order-events"],
        BACKOFFICE_GROUP_ID=group,
        LOG_LEVEL="WARNING",
        OUTBOX_POLL_INTERVAL="1",
        OUTBOX_KICK_ENABLED="1",
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONUNBUFFERED="1",
    )
    processes = [
        ManagedProcess(
            name="worker",
            env=dict(env, LOG_LEVEL="INFO"),
            log_path=log_dir / "worker.log",
            ready_text="ready.",
            argv=[
                sys.executable,
                "-m",
                "celery",
                "-A",
                "commerce",
                "worker",
                "--beat",
                "--concurrency=2",
                "--loglevel=INFO",
                "--purge",
                f"--schedule={log_dir / 'celerybeat-schedule'}",
            ],
        )
    ]
    if relay_loop:
        processes.append(
            ManagedProcess(
                name="relay-loop",
                env=env,
                log_path=log_dir / "relay-loop.log",
                argv=[sys.executable, "manage.py", "relay_loop"],
            )
        )
    processes.append(
        ManagedProcess(
            name="consumer",
            env=env,
            ready_text="consuming",
            log_path=log_dir / "consumer.log",
            argv=[sys.executable, str(Path(__file__).resolve()), "--consumer-child", str(applied_log)],
        )
    )
    user, _ = get_user_model().objects.get_or_create(username="bench-e2e")
    products = [product_create(name=f"e2e {n}", price=Decimal("5.00"), stock=10_000_000) for n in range(50)]
    results: dict[str, dict[str, float]] = {}
    phases = [("wakeup", True)] + ([("poll_only", False)] if options.with_poll_only else [])
    try:
        for process in processes:
            process.start(timeout=90)
        time.sleep(3)  # the consumer joins its group
        for phase, kick in phases:
            settings.OUTBOX_KICK_ENABLED = kick
            if not kick and relay_loop:
                say("poll_only: skipped (the relay loop's NOTIFY cannot be turned off from here)")
                continue
            say(
                f"{phase}: {options.rate:.0f} orders/s from {options.writers} writer threads for {seconds:.0f} s "
                f"(load average {os.getloadavg()[0]:.2f}) ..."
            )
            first_seq = OutboxEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
            committed_at: dict[str, float] = {}  # event id -> time.time() once its COMMIT returned
            started = time.monotonic()
            rate_each = options.rate / options.writers

            def writer(
                n: int, started: float = started, rate_each: float = rate_each, committed_at: dict = committed_at
            ) -> int:
                """Orders on an open-loop schedule of its own (rate / writers), its own connection,
                each on its own products (two writers never wait for one product's row lock)."""
                placed = 0
                mine = products[n :: options.writers]
                try:
                    while time.monotonic() - started < seconds:
                        delay = started + placed / rate_each - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        product = mine[placed % len(mine)]
                        with transaction.atomic():
                            order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=1)])
                            ids = event_ids_of_this_transaction(order.id, product.id)
                            transaction.on_commit(functools.partial(note_commit, committed_at, ids))
                        placed += 1
                finally:
                    connections.close_all()
                return placed

            with ThreadPoolExecutor(max_workers=options.writers) as pool:
                placed = sum(pool.map(writer, range(options.writers)))
            achieved = placed / (time.monotonic() - started)
            event_ids = {
                str(e) for e in OutboxEvent.objects.filter(seq__gt=first_seq).values_list("event_id", flat=True)
            }
            deadline = time.monotonic() + 60
            latencies: dict[str, float] = {}
            from_occurred: dict[str, float] = {}
            consumer_legs: dict[str, float] = {}
            to_poll: dict[str, float] = {}
            while time.monotonic() < deadline:
                for line in applied_log.read_text().splitlines() if applied_log.exists() else []:
                    event_id, occurred, committed, sent, polled = line.split()
                    if event_id in event_ids:
                        latencies[event_id] = (float(committed) - committed_at.get(event_id, float(occurred))) * 1000
                        from_occurred[event_id] = (float(committed) - float(occurred)) * 1000
                        consumer_legs[event_id] = (float(committed) - float(sent)) * 1000
                        to_poll[event_id] = (float(polled) - float(sent)) * 1000
                if len(latencies) >= len(event_ids):
                    break
                time.sleep(0.5)
            values = list(latencies.values())
            legs = list(consumer_legs.values())
            results[phase] = {
                "p50": percentile(values, 0.5),
                "p95": percentile(values, 0.95),
                "p99": percentile(values, 0.99),
                "max": max(values),
                "events": len(values),
                "orders_per_s": achieved,
                "from_occurred_p50": percentile(list(from_occurred.values()), 0.5),
                "from_occurred_p99": percentile(list(from_occurred.values()), 0.99),
                "without_commit_time": len(event_ids - committed_at.keys()),
                "consumer_p50": percentile(legs, 0.5),
                "consumer_p99": percentile(legs, 0.99),
                # The leg split at the poll: Kafka's hop, and the wait behind the batch being
                # applied; then the batch's own apply and commit.
                "to_poll_p50": percentile(list(to_poll.values()), 0.5),
                "apply_p50": percentile([consumer_legs[e] - to_poll[e] for e in to_poll], 0.5),
            }
            say(
                f"  {len(values)}/{len(event_ids)} events, {achieved:.0f} orders/s achieved: "
                f"p50 {results[phase]['p50']:.1f} ms, p95 {results[phase]['p95']:.1f} ms, "
                f"p99 {results[phase]['p99']:.1f} ms, max {results[phase]['max']:.1f} ms; of which the "
                f"back office's leg (the record's Kafka timestamp -> its batch committed) p50 "
                f"{results[phase]['consumer_p50']:.1f} ms, p99 {results[phase]['consumer_p99']:.1f} ms (send -> polled "
                f"p50 {results[phase]['to_poll_p50']:.1f} ms, polled -> committed p50 "
                f"{results[phase]['apply_p50']:.1f} ms); "
                f"from the events' occurred_at (stamped inside the transaction) p50 "
                f"{results[phase]['from_occurred_p50']:.1f} ms, p99 {results[phase]['from_occurred_p99']:.1f} ms"
                + (
                    f"; {results[phase]['without_commit_time']} events without a commit time (occurred_at used)"
                    if results[phase]["without_commit_time"]
                    else ""
                )
            )
    finally:
        for process in reversed(processes):
            process.stop()
        topics_delete(topics)
    main_phase = results["wakeup"]
    say(
        f"commit -> projection committed ({wakeup}): "
        f"p50 <= 10 ms {'MET' if main_phase['p50'] <= 10 else 'MISSED'}, "
        f"p99 <= 40 ms {'MET' if main_phase['p99'] <= 40 else 'MISSED'} "
        f"(load average {os.getloadavg()[0]:.2f})"
    )
    figures = {
        "p50_ms": round(main_phase["p50"], 1),
        "p95_ms": round(main_phase["p95"], 1),
        "p99_ms": round(main_phase["p99"], 1),
        "max_ms": round(main_phase["max"], 1),
        "from_occurred_p50_ms": round(main_phase["from_occurred_p50"], 1),
        "from_occurred_p99_ms": round(main_phase["from_occurred_p99"], 1),
        "consumer_leg_p50_ms": round(main_phase["consumer_p50"], 1),
        "consumer_leg_p99_ms": round(main_phase["consumer_p99"], 1),
        "consumer_to_poll_p50_ms": round(main_phase["to_poll_p50"], 1),
        "consumer_apply_p50_ms": round(main_phase["apply_p50"], 1),
        "orders_per_s": round(main_phase["orders_per_s"], 1),
        "writers": options.writers,
        "events": main_phase["events"],
        "relay": "relay_loop" if relay_loop else "celery_kick",
        **consumer_settings,
        "load_average": round(os.getloadavg()[0], 2),
        "versions": versions,
    }
    if "poll_only" in results:
        figures.update(
            poll_only_p50_ms=round(results["poll_only"]["p50"], 1),
            poll_only_p99_ms=round(results["poll_only"]["p99"], 1),
        )
    finish(figures)


if __name__ == "__main__":
    main()
