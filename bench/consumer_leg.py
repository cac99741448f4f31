"""The back office's own latency leg at 200 events/s: a producer (acks=all, linger 0) sends one
view event every 5 ms; EventConsumer (production settings, FETCH_MAX_WAIT from the argument)
applies them; per event, the record's Kafka timestamp -> poll returned -> batch committed. The
first second (the consumer's first fetch finding its position) is left out and counted.
An exploration behind docs/BENCHMARKS.md, "End to end" (no target of its own).

    .venv/bin/python bench/consumer_leg.py [FETCH_MAX_WAIT_MS]
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import django_setup, tables_empty, topics_delete, topics_fresh


def main() -> None:
    django_setup()
    # After django_setup(): the models and the consumer need the app registry.
    from django.conf import settings
    from kafka import KafkaProducer

    from backoffice.consumer import EventConsumer
    from backoffice.contract import IncomingEvent
    from backoffice.models import DeadLetter, EventLog, InboxEntry, OrderLedger, ProductMetrics
    from tests.backoffice.stream import view

    wait = int(sys.argv[1]) if len(sys.argv) > 1 else settings.BACKOFFICE_FETCH_MAX_WAIT_MS
    settings.BACKOFFICE_FETCH_MAX_WAIT_MS = wait
    topics = topics_fresh(["catalog-events", "order-events"])
    legs: list[float] = []
    fetch: list[float] = []
    apply: list[float] = []
    last_poll = [0.0]

    measure_from_ms = [float("inf")]  # Kafka timestamps before it: the warm-up, left out
    warm_up = [0]

    def hook(events: list[IncomingEvent], committed: float, records: dict[Any, Any]) -> None:
        for e in events:
            ts = records[(e.topic, e.partition, e.offset)].timestamp
            if ts < measure_from_ms[0]:
                warm_up[0] += 1
                continue
            legs.append(committed * 1000 - ts)
            fetch.append(last_poll[0] * 1000 - ts)
            apply.append((committed - last_poll[0]) * 1000)

    c = EventConsumer(topics=list(topics.values()), group_id=f"leg-{wait}-{time.time()}", on_applied=hook)
    orig = c.consumer.poll

    def wrapped(*a: Any, **k: Any) -> Any:
        r = orig(*a, **k)
        last_poll[0] = time.time()
        return r

    c.consumer.poll = wrapped  # type: ignore[method-assign]  # times each poll's return, this run only
    t0 = time.time()
    while not c.consumer.assignment() and time.time() - t0 < 30:
        c.consumer.poll(timeout_ms=200)
    stop = threading.Event()

    def produce() -> None:
        p = KafkaProducer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, acks="all", linger_ms=0)
        n = 0
        start = time.monotonic()
        while not stop.is_set():
            r = view(str(n % 50))
            p.send(topics["catalog-events"], key=r.key, value=r.value, headers=r.headers)
            n += 1
            d = start + n / 200 - time.monotonic()
            if d > 0:
                time.sleep(d)
        p.flush()
        p.close()

    th = threading.Thread(target=produce)
    # The first second is left out: until the consumer's first fetch has found its position, the
    # events wait (about 95 ms for the first 30, 2026-11-26), which was the whole of the p99.
    measure_from_ms[0] = (time.time() + 1.0) * 1000
    th.start()
    end = time.monotonic() + 10
    while time.monotonic() < end:
        c.run(max_events=c.stats.polled + 50, until_idle_s=1)
    stop.set()
    th.join()
    c.close()
    topics_delete(topics)
    tables_empty(InboxEntry, EventLog, ProductMetrics, OrderLedger, DeadLetter)
    legs.sort()

    def q(x: float) -> float:
        return legs[min(len(legs) - 1, int(x * (len(legs) - 1)))]

    figures: dict[str, float] = {
        "fetch_max_wait_ms": wait,
        "events": len(legs),
        "warm_up_events_left_out": warm_up[0],
        "leg_p50_ms": round(q(0.5), 1),
        "leg_p99_ms": round(q(0.99), 1),
        "load_average": round(os.getloadavg()[0], 1),
    }
    for name, key, xs in (
        ("record ts -> poll returned", "fetch", fetch),
        ("poll returned -> committed", "apply", apply),
    ):
        xs.sort()
        print(f"  {name}: p50 {xs[len(xs) // 2]:.1f} ms, p99 {xs[int(0.99 * (len(xs) - 1))]:.1f} ms")
        figures[f"{key}_p50_ms"] = round(xs[len(xs) // 2], 1)
        figures[f"{key}_p99_ms"] = round(xs[int(0.99 * (len(xs) - 1))], 1)
    print(
        f"fetch_max_wait_ms={wait}: {len(legs)} events, leg p50 {q(0.5):.1f} ms p95 {q(0.95):.1f}"
        f" p99 {q(0.99):.1f} max {legs[-1]:.1f}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
