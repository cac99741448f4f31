"""Back-office throughput: consume catalog and order events into the PostgreSQL projections.

N mixed events (likes, views, stock changes, order confirmations and cancellations, built by
tests/backoffice/stream.py in the relay's envelope) are produced once to fresh 3-partition
topics, then consumed by `EventConsumer` at the production settings (BACKOFFICE_BATCH_SIZE, the
batch `consume_events` uses) until all are applied, in several rounds (a new group and empty
projections each); the projections are checked against what the stream implies after each.
Baseline in the same run: a naive consumer on a sample, with kafka-python's defaults (its
max_poll_records, fetch waits) and one transaction plus one offset commit per record, as
the library's examples do. Both clocks start once the consumer has joined its group (a one-off
cost, reported apart). Besides events/s (which a loaded machine lowers), the process's CPU
seconds per 1,000 events. Targets: >= 10,000 events/s, >= 10x naive, RSS flat.

    .venv/bin/python bench/consumer.py [--quick] [--events N] [--rounds N] [--batch-size N]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from common import RssSampler, django_setup, finish, say, tables_empty, topics_delete, topics_fresh
from versions import versions_detected


def backend_pid_of_this_connection() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process on this machine (the PostgreSQL backend serving the
    consumer's connection: the database's share of the work); 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: BACKOFFICE_BATCH_SIZE, as consume_events"
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--naive-sample", type=int, default=None)
    options = parser.parse_args()
    events = options.events or (20_000 if options.quick else 100_000)
    rounds = options.rounds or (2 if options.quick else 3)
    naive_sample = options.naive_sample or (500 if options.quick else 2000)
    django_setup()

    from django.conf import settings
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata

    from backoffice.consumer import EventConsumer
    from backoffice.contract import ContractViolation, event_parse
    from backoffice.models import DeadLetter, EventLog, InboxEntry, OrderLedger, ProductMetrics
    from backoffice.projections import batch_apply
    from tests.backoffice.stream import produce, projections_differences, stream_make

    def reset() -> None:
        tables_empty(InboxEntry, EventLog, ProductMetrics, OrderLedger, DeadLetter)

    def joined(kafka_consumer: KafkaConsumer, timeout_s: float = 60) -> float:
        """Join the group before the clock starts; rewind whatever the joining poll fetched."""
        started = time.perf_counter()
        while not kafka_consumer.assignment():
            kafka_consumer.poll(timeout_ms=200, max_records=1)
            if time.perf_counter() - started > timeout_s:
                raise SystemExit("the consumer did not join its group")
        kafka_consumer.seek_to_beginning(*kafka_consumer.assignment())
        return time.perf_counter() - started

    batch_size = options.batch_size or settings.BACKOFFICE_BATCH_SIZE
    versions = versions_detected()
    say("versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    say(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    consumer_settings = {
        "batch_size": batch_size,
        "fetch_max_wait_ms": settings.BACKOFFICE_FETCH_MAX_WAIT_MS,
        "poll_timeout_ms": settings.BACKOFFICE_POLL_TIMEOUT_MS,
        "session_timeout_ms": settings.BACKOFFICE_SESSION_TIMEOUT_MS,
    }
    say(f"consumer settings: {consumer_settings}")
    topics = topics_fresh(["catalog-events", "order-events"])
    reset()
    figures: list[dict[str, float]] = []
    try:
        say(f"producing {events} catalog and order events to {sorted(topics.values())} ...")
        records, expected = stream_make(products=200, events=events, seed=42)
        started = time.perf_counter()
        produce(records, topics)
        total = len(records)
        say(f"  produced {total} in {time.perf_counter() - started:.1f} s")
        del records

        for round_number in range(1, rounds + 1):
            reset()
            group = f"bench-{uuid.uuid4().hex[:8]}"
            say(f"round {round_number}/{rounds}: EventConsumer(group {group}, batch_size {batch_size}) ...")
            consumer = EventConsumer(
                topics=list(topics.values()), group_id=group, batch_size=batch_size, progress_every_s=2
            )
            join_seconds = joined(consumer.consumer)
            say(
                f"  joined the group in {join_seconds:.1f} s (not timed); objects frozen out of the "
                f"cyclic GC: {gc.get_freeze_count():,}"
            )
            sampler = RssSampler()
            backend_pid = backend_pid_of_this_connection()
            with sampler:
                backend_cpu_started = process_cpu_seconds(backend_pid)
                cpu_started = time.process_time()
                started = time.perf_counter()
                while consumer.stats.polled < total and not consumer.stopping:
                    consumer.run(max_events=total, until_idle_s=10, on_progress=lambda line: say(f"  {line}"))
                    if time.perf_counter() - started > 900:
                        say("  giving up after 900 s")
                        break
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started
                backend_cpu_seconds = process_cpu_seconds(backend_pid) - backend_cpu_started
            stats = consumer.stats
            consumer.close()
            eps = stats.polled / seconds
            differences = projections_differences(expected)
            figures.append(
                {
                    "eps": eps,
                    "db_cpu_ms_per_1000": 1e6 * backend_cpu_seconds / max(1, stats.polled),
                    "cpu_ms_per_1000": 1000 * cpu_seconds / max(1, stats.polled) * 1000,
                    "rss_start_mb": sampler.samples[0][1],
                    "rss_end_mb": sampler.samples[-1][1],
                    "rss_growth_mb": sampler.growth_mb,
                    "exact": not differences,
                    "join_seconds": join_seconds,
                }
            )
            say(
                f"  {stats.polled} events in {seconds:.2f} s = {eps:,.0f} events/s; CPU "
                f"{cpu_seconds:.2f} s = {1e6 * cpu_seconds / max(1, stats.polled):.0f} ms per 1,000 "
                f"events, and PostgreSQL's backend {1e6 * backend_cpu_seconds / max(1, stats.polled):.0f} ms "
                f"({stats.batches} batches, applied {stats.applied}, duplicates {stats.duplicates}, "
                f"dead letters {stats.dead_lettered}, retries {stats.retries})"
            )
            say(
                f"  RSS {sampler.samples[0][1]:.0f} MB at start, {sampler.at(0.25):.0f} MB at 25%, "
                f"{sampler.samples[-1][1]:.0f} MB at the end: growth from 25% {sampler.growth_mb} MB "
                f"(peak {sampler.peak_mb:.0f} MB)"
            )
            say(f"  projections exact: {'yes' if not differences else 'NO: ' + '; '.join(differences[:3])}")
        rates = sorted(f["eps"] for f in figures)
        consumer_eps = statistics.median(rates)
        cpu_per_1000 = statistics.median(f["cpu_ms_per_1000"] for f in figures)
        db_cpu_per_1000 = statistics.median(f["db_cpu_ms_per_1000"] for f in figures)
        say(
            f"consumer over {rounds} rounds: min {rates[0]:,.0f}, median {consumer_eps:,.0f}, "
            f"max {rates[-1]:,.0f} events/s; CPU {cpu_per_1000:.0f} ms per 1,000 events "
            f"(a ceiling of {1000 / cpu_per_1000 * 1000:,.0f} events/s on one free core), PostgreSQL's "
            f"backend {db_cpu_per_1000:.0f} ms per 1,000 events"
        )

        reset()
        say(f"naive consumer: {naive_sample} records, one transaction + one offset commit each ...")
        naive_group = f"bench-naive-{uuid.uuid4().hex[:8]}"
        # What a user of the library writes first: its defaults, except reading from the start
        # and committing by hand after each record's transaction (auto-commit would lose events).
        naive_settings: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
        say(f"  naive settings: {naive_settings}, the rest kafka-python's defaults")
        naive = KafkaConsumer(
            *topics.values(),
            bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            group_id=naive_group,
            **naive_settings,
            **settings.KAFKA_SECURITY,
        )
        joined(naive)
        handled = 0
        started = time.perf_counter()
        while handled < naive_sample:
            for tp, batch in naive.poll(timeout_ms=1000).items():
                for record in batch:
                    if handled >= naive_sample:
                        break
                    try:
                        event = event_parse(
                            topic=record.topic,
                            partition=record.partition,
                            offset=record.offset,
                            key=record.key,
                            value=record.value,
                            headers=list(record.headers or []),
                        )
                        batch_apply(group=naive_group, events=[event], poison=[])
                    except ContractViolation:
                        pass
                    naive.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                    handled += 1
                    if handled % max(1, naive_sample // 4) == 0:
                        say(
                            f"  naive: {handled}/{naive_sample} "
                            f"({handled / (time.perf_counter() - started):,.0f} events/s)"
                        )
        naive_seconds = time.perf_counter() - started
        naive.close()
        naive_eps = handled / naive_seconds
        say(
            f"naive consumer: {handled} events in {naive_seconds:.2f} s = {naive_eps:,.0f} events/s "
            f"(extrapolated: {total} events would take {total / naive_eps:,.0f} s)"
        )
    finally:
        reset()
        topics_delete(topics)

    ratio = consumer_eps / naive_eps
    say(
        f"consumer median {consumer_eps:,.0f} events/s (target >= 10,000: "
        f"{'MET' if consumer_eps >= 10000 else 'MISSED'}; load average {os.getloadavg()[0]:.2f})"
    )
    say(f"consumer / naive = {ratio:.1f} (target >= 10: {'MET' if ratio >= 10 else 'MISSED'})")
    finish(
        {
            "events": total,
            "rounds": rounds,
            "consumer_eps": round(consumer_eps),
            "consumer_eps_min": round(rates[0]),
            "consumer_eps_max": round(rates[-1]),
            "cpu_ms_per_1000_events": round(cpu_per_1000, 1),
            "db_backend_cpu_ms_per_1000_events": round(db_cpu_per_1000, 1),
            "naive_eps": round(naive_eps),
            "ratio_vs_naive": round(ratio, 1),
            "rss_start_mb": round(figures[-1]["rss_start_mb"], 1),
            "rss_end_mb": round(figures[-1]["rss_end_mb"], 1),
            "rss_growth_mb": max(f["rss_growth_mb"] for f in figures),
            "join_seconds": round(max(f["join_seconds"] for f in figures), 1),
            "batch_size": batch_size,
            "fetch_max_wait_ms": settings.BACKOFFICE_FETCH_MAX_WAIT_MS,
            "projections_exact": all(f["exact"] for f in figures),
            "load_average": round(os.getloadavg()[0], 2),
            "versions": versions,
        }
    )


if __name__ == "__main__":
    main()
