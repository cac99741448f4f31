"""Noisy events must not starve the important ones: the commit -> Kafka latency of order events
while 100,000 product-view events are pending on the catalog topic (PostgreSQL, real broker).

Per phase: the outbox holds the view backlog (one INSERT ... SELECT); a relay drains in a thread
(`relay_drain` in a loop, batches of OUTBOX_BATCH_SIZE); order events are committed one every
50 ms meanwhile, each its own transaction; a consumer reads the order topic and stamps each record
on arrival. Latency = arrival - commit, per order event. Two phases in the same run: fair share
per topic on (`OUTBOX_FAIR_SHARE`, the default) and off (oldest first whatever the topic: the
baseline, what the relay did before).

    .venv/bin/python bench/fairness.py [--quick] [--views N] [--orders N]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from common import django_setup, finish, say, tables_empty, topics_delete, topics_fresh


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20,000 view events, 60 order events")
    parser.add_argument("--views", type=int, default=None)
    parser.add_argument("--orders", type=int, default=None)
    options = parser.parse_args()
    views = options.views or (20_000 if options.quick else 100_000)
    orders = options.orders or (60 if options.quick else 100)
    django_setup()

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone
    from kafka import KafkaConsumer, TopicPartition

    from outbox.kafka import producer_reset
    from outbox.models import OutboxEvent
    from outbox.relay import relay_drain

    topics = topics_fresh()
    catalog, order = topics["catalog-events"], topics["order-events"]
    table = OutboxEvent._meta.db_table

    def phase(fair: bool) -> dict[str, float]:
        settings.OUTBOX_FAIR_SHARE = fair
        tables_empty(OutboxEvent)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (id, topic, key, type, event_version, aggregatetype, aggregateid, "
                "payload, headers, occurred_at, created_at, status, available_at, attempts, last_error) "
                "SELECT gen_random_uuid(), %s, (g %% 1000)::text, 'ProductViewed', 1, 'product', "
                "(g %% 1000)::text, jsonb_build_object('product_id', (g %% 1000)::text), '{}'::jsonb, "
                "now(), now(), 'pending', now(), 0, '' FROM generate_series(1, %s) g",
                [catalog, views],
            )
            cursor.execute(f"ANALYZE {table}")
        arrived: dict[bytes, float] = {}
        committed: dict[bytes, float] = {}
        stop = threading.Event()

        def consume() -> None:
            consumer = KafkaConsumer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                group_id=None,
                enable_auto_commit=False,
                **settings.KAFKA_SECURITY,
            )
            try:
                assignment = [TopicPartition(order, p) for p in sorted(consumer.partitions_for_topic(order))]
                consumer.assign(assignment)
                consumer.seek_to_end(*assignment)
                for tp in assignment:
                    consumer.position(tp)
                ready.set()
                while not stop.is_set():
                    for records in consumer.poll(timeout_ms=100).values():
                        now = time.time()
                        for record in records:
                            arrived.setdefault(dict(record.headers)["event_id"], now)
            finally:
                consumer.close()

        def relay() -> None:
            try:
                while not stop.is_set():
                    if not relay_drain(time_budget_s=2.0).batches:
                        time.sleep(0.05)
            finally:
                connection.close()

        ready = threading.Event()
        threads = [threading.Thread(target=consume), threading.Thread(target=relay)]
        threads[0].start()
        ready.wait(30)
        started = time.time()
        threads[1].start()
        for n in range(orders):
            row = OutboxEvent.objects.create(
                topic=order,
                key=f"order-{n}",
                type="OrderPlaced",
                aggregatetype="order",
                aggregateid=f"order-{n}",
                payload={"order_id": f"order-{n}"},
                occurred_at=timezone.now(),
                available_at=timezone.now(),
            )
            committed[str(row.event_id).encode()] = time.time()  # autocommit: committed on return
            time.sleep(0.05)
        deadline = time.time() + 300
        while len(arrived.keys() & committed.keys()) < orders and time.time() < deadline:
            time.sleep(0.1)
        backlog_left = OutboxEvent.objects.filter(status="pending", topic=catalog).count()
        stop.set()
        for thread in threads:
            thread.join()
        producer_reset()
        latencies = sorted(
            (arrived[event_id] - committed[event_id]) * 1000 for event_id in committed if event_id in arrived
        )
        if len(latencies) < orders:
            raise SystemExit(f"only {len(latencies)} of {orders} order events arrived")
        figures = {
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "max_ms": latencies[-1],
            "views_pending_when_orders_done": backlog_left,
            "seconds": time.time() - started,
        }
        say(
            f"fair share {'on ' if fair else 'off'}: order event commit -> Kafka p50 {figures['p50_ms']:.0f} ms, "
            f"p99 {figures['p99_ms']:.0f} ms, max {figures['max_ms']:.0f} ms "
            f"({backlog_left:,} view events still pending when the last order arrived)"
        )
        return figures

    say(
        f"{views:,} pending view events on {catalog}; {orders} order events committed every 50 ms "
        f"while the relay drains (batches of {settings.OUTBOX_BATCH_SIZE})"
    )
    try:
        fair = phase(True)
        baseline = phase(False)
    finally:
        tables_empty(OutboxEvent)
        topics_delete(topics)
    ratio = baseline["p99_ms"] / fair["p99_ms"]
    say(f"p99 without / with fair share = {ratio:.1f}x")
    finish(
        {
            "views": views,
            "orders": orders,
            "batch_size": settings.OUTBOX_BATCH_SIZE,
            "fair_p50_ms": round(fair["p50_ms"], 1),
            "fair_p99_ms": round(fair["p99_ms"], 1),
            "oldest_first_p50_ms": round(baseline["p50_ms"], 1),
            "oldest_first_p99_ms": round(baseline["p99_ms"], 1),
            "p99_ratio": round(ratio, 1),
        }
    )


if __name__ == "__main__":
    main()
