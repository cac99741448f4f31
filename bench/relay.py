"""Relay throughput: drain pre-recorded outbox rows on PostgreSQL to a 3-partition topic.

Baselines in the same run: (a) the raw kafka-python producer (same `producer_config()`) sending
the very same records (topic, key, value, headers built as the relay builds them) and flushing;
(b) a naive relay on a sample (one row at a time: send, wait for the ack, `save()` the row as
published). Targets: relay >= 0.8x raw (issue 15) and >= 20x naive; relay memory flat however many rows
it drains (RSS growth between 25% and 100% of the drain).

`--brokers 3` runs the same against the local 3-node cluster (KAFKA_CLUSTER_BOOTSTRAP_SERVERS,
started by `KAFKA_BROKERS=3 scripts/kafka-local` if it does not answer) on topics made by
`topics_ensure` (replication factor 3, min.insync.replicas 2), so `acks=all` waits for two
replicas; it then measures the commit -> ack latency at a steady `--latency-rate` (default
1,000 events/s): transactions of 10 events commit every 10 ms while a relay loop drains them;
the latency of a row is `published_at` (the relay's clock once the broker acknowledged it,
before the write back) minus `created_at` (its insert, in a transaction that commits at once).

Every figure is measured over `--rounds` rounds (record, relay drain, raw send of the same
records): the ratio's min/median/max is reported, not the best round. The relay runs at the
default `OUTBOX_BATCH_SIZE` unless `--batch-size` says otherwise, with its Prometheus metrics on
(and, with `--tracing`, its OpenTelemetry spans exported to a sink that drops them). The naive
relay uses kafka-python's own defaults (only the bootstrap servers and security set): what a
naive user would write. The settings of each run, the Kafka broker version (from its API
versions) and the kafka-python version are printed at the start.

    .venv/bin/python bench/relay.py [--quick] [--events N] [--rounds N] [--batch-size N]
                                    [--brokers 1|3] [--latency-rate N] [--tracing] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from typing import TYPE_CHECKING

from common import (
    RssSampler,
    django_setup,
    finish,
    peak_rss_mb,
    peak_rss_reset,
    say,
    tables_empty,
    topics_delete,
    topics_fresh,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests.support.kafka import KafkaCluster

KEYS = 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of (relay drain, raw send); default 3, 5 without --quick"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="the relay's batch size (default: OUTBOX_BATCH_SIZE)"
    )
    parser.add_argument("--naive-sample", type=int, default=None)
    parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="3: on the local 3-node cluster, replication factor 3, min ISR 2",
    )
    parser.add_argument(
        "--latency-rate",
        type=int,
        default=None,
        help="events/s of the commit->ack latency phase (default 1000 with --brokers 3, off with 1; 0 turns it off)",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=KEYS,
        help=f"keys the rows are spread over (default {KEYS}; 1: one hot key's backlog)",
    )
    parser.add_argument(
        "--tracing", action="store_true", help="OpenTelemetry on in the relay (spans batched to a sink that drops them)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also drain once more under cProfile and print the top functions"
    )
    options = parser.parse_args()
    # Quick still drains 30,000 a round: with fewer, the drain's fixed start-up weighs on the ratio.
    events = options.events or (30_000 if options.quick else 100_000)
    rounds = options.rounds or (3 if options.quick else 5)
    naive_sample = options.naive_sample or (300 if options.quick else 2000)
    keys = options.keys
    django_setup()
    cluster, cluster_started_here = cluster_use() if options.brokers == 3 else (None, False)
    latency_rate = options.latency_rate if options.latency_rate is not None else (1000 if cluster else 0)

    from django.conf import settings
    from django.db.models import TextField
    from django.db.models.functions import Cast
    from kafka import KafkaProducer
    from kafka.version import __version__ as kafka_python_version

    from outbox.kafka import producer_config, producer_get, producer_reset
    from outbox.models import OutboxEvent
    from outbox.relay import SEND_FIELDS, ClaimedRow, _record_headers, relay_drain
    from tests.outbox.events_for_tests import outbox_rows_bulk

    batch_size = options.batch_size or settings.OUTBOX_BATCH_SIZE
    if options.tracing:
        tracing_on()

    def record_pending(count: int, keys: int) -> int:
        """Bulk-insert `count` pending rows over `keys` keys, in chunks (bounded memory)."""
        chunk = max(keys, 20_000 // keys * keys)
        for start in range(0, count, chunk):
            outbox_rows_bulk(topic=topic, keys=keys, per_key=max(1, min(chunk, count - start) // keys))
        return OutboxEvent.objects.filter(status="pending").count()

    def records_as_relay_sends() -> list[tuple[str, bytes, bytes, list]]:
        """(topic, key, value, headers) of every row, exactly as the relay's send builds them."""
        rows = (
            OutboxEvent.objects.annotate(payload_text=Cast("payload", output_field=TextField()))
            .order_by("seq")
            .values_list(*SEND_FIELDS, "payload_text")
        )
        out = []
        for values in rows.iterator(chunk_size=5000):
            row = ClaimedRow.from_orm_values(values)
            out.append((row.topic, row.key.encode(), row.payload_text.encode(), _record_headers(row)))
        return out

    def drain_all(total: int, progress: bool = True) -> tuple[int, float]:
        started = time.perf_counter()
        published = 0
        while True:
            # A short time budget per call only so that progress can be printed between calls.
            result = relay_drain(batch_size=batch_size, time_budget_s=2.0)
            published += result.published
            if result.failed or result.dead:
                say(f"  relay reported failures: {result.as_dict()} {result.errors[-1:]}")
            if not result.batches:
                break
            if progress:
                elapsed = time.perf_counter() - started
                say(f"  published {published}/{total} ({published / elapsed:,.0f} events/s so far)")
        return published, time.perf_counter() - started

    topics = topics_fresh(["catalog-events"]) if cluster is None else cluster_topics_fresh(cluster)
    topic = topics["catalog-events"]
    naive_config = {"bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY}
    settings_print(
        batch_size=batch_size,
        events=events,
        rounds=rounds,
        keys=keys,
        brokers=options.brokers,
        producer=producer_config(),
        naive=naive_config,
        tracing=options.tracing,
        kafka_python=kafka_python_version,
    )
    tables_empty(OutboxEvent)
    latency: dict[str, float] = {}
    measured: list[dict[str, float]] = []
    try:
        for round_no in range(1, rounds + 1):
            say(f"== round {round_no}/{rounds} (load average {load_average()})")
            tables_empty(OutboxEvent)
            say(f"recording {events} pending events across {keys} keys (bulk inserts) ...")
            total = record_pending(events, keys)
            say(f"relay: relay_drain(batch_size={batch_size}) until nothing is pending ...")
            producer_reset()
            producer_get().partitions_for(topic)  # a long-lived producer knows its topics already
            peak_rss_reset()  # the relay's own peak, not the recording's
            with RssSampler() as sampler:
                published, relay_seconds = drain_all(total, progress=False)
            relay_peak_mb = peak_rss_mb()  # before the baseline loads its records into memory
            pending_left = OutboxEvent.objects.filter(status="pending").count()
            # Each published row must carry the partition and offset Kafka gave it: distinct pairs.
            positions = (
                OutboxEvent.objects.filter(status="published", kafka_offset__isnull=False)
                .values_list("kafka_partition", "kafka_offset")
                .distinct()
                .count()
            )
            if positions != published or published != total:
                raise SystemExit(
                    f"relay published {published} of {total} rows with {positions} distinct partition/offset pairs"
                )
            relay_eps = published / relay_seconds
            say(
                f"relay: {published} events in {relay_seconds:.2f} s = {relay_eps:,.0f} events/s "
                f"(peak RSS {relay_peak_mb:.0f} MB, RSS {sampler.at(0.25):.0f} MB at 25% -> "
                f"{sampler.samples[-1][1]:.0f} MB at 100%: growth {sampler.growth_mb} MB; "
                f"{pending_left} left pending)"
            )

            records = records_as_relay_sends()
            raw_producer = KafkaProducer(**producer_config())
            raw_producer.partitions_for(topic)  # metadata fetched before the clock starts, as the relay's is
            started = time.perf_counter()
            for record_topic, key, value, headers in records:
                raw_producer.send(record_topic, key=key, value=value, headers=headers)
            raw_producer.flush()
            raw_seconds = time.perf_counter() - started
            raw_producer.close()
            raw_eps = len(records) / raw_seconds
            del records
            say(
                f"raw producer: {published} records in {raw_seconds:.2f} s = {raw_eps:,.0f} events/s"
                f"  -> relay / raw = {relay_eps / raw_eps:.2f}"
            )
            measured.append(
                {
                    "relay_eps": relay_eps,
                    "raw_eps": raw_eps,
                    "ratio": relay_eps / raw_eps,
                    "peak_mb": relay_peak_mb,
                    "growth_mb": sampler.growth_mb,
                }
            )

        say(
            f"naive relay: {naive_sample} rows, one at a time (send, wait for the ack, save()), "
            "kafka-python's defaults ..."
        )
        tables_empty(OutboxEvent)
        record_pending(naive_sample, min(100, naive_sample))
        naive_producer = KafkaProducer(**naive_config)
        naive_producer.partitions_for(topic)
        rows = list(OutboxEvent.objects.filter(status="pending").order_by("seq"))
        started = time.perf_counter()
        for row in rows:
            claimed = ClaimedRow.from_orm_values(
                (
                    row.seq,
                    row.event_id,
                    row.topic,
                    row.key,
                    row.type,
                    row.event_version,
                    row.aggregatetype,
                    row.aggregateid,
                    row.aggregate_version,
                    row.headers,
                    row.occurred_at,
                    row.attempts,
                    "",
                )
            )
            metadata = naive_producer.send(
                row.topic,
                key=row.key.encode(),
                headers=_record_headers(claimed),
                value=json.dumps(row.payload).encode(),
            ).get(timeout=30)
            row.status = OutboxEvent.Status.PUBLISHED
            row.kafka_partition, row.kafka_offset = metadata.partition, metadata.offset
            row.save()
        naive_seconds = time.perf_counter() - started
        naive_producer.close()
        naive_eps = len(rows) / naive_seconds
        say(f"naive relay: {len(rows)} rows in {naive_seconds:.2f} s = {naive_eps:,.0f} events/s")

        if latency_rate:
            tables_empty(OutboxEvent)
            producer_reset()
            producer_get().partitions_for(topic)
            seconds = 10 if options.quick else 20
            say(f"latency: {latency_rate} events/s committed for {seconds} s while a relay loop drains ...")
            latency = commit_to_ack_latency(topic=topic, rate=latency_rate, seconds=seconds)
            say(
                f"latency: commit -> ack p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, "
                f"max {latency['max_ms']:.1f} ms over {latency['events']} events "
                f"({latency['achieved_rate']:.0f} events/s committed)"
            )

        if options.profile:
            import cProfile
            import pstats

            tables_empty(OutboxEvent)
            record_pending(events, keys)
            say("profile: draining again under cProfile ...")
            profiler = cProfile.Profile()
            profiler.enable()
            drain_all(events, progress=False)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    finally:
        tables_empty(OutboxEvent)
        topics_delete(topics)
        if cluster is not None and cluster_started_here:
            cluster.stop()

    ratios = sorted(m["ratio"] for m in measured)
    median_round = sorted(measured, key=lambda m: m["ratio"])[(len(measured) - 1) // 2]
    relay_eps, raw_eps = median_round["relay_eps"], median_round["raw_eps"]
    ratio_median = statistics.median(ratios)
    ratio_vs_naive = relay_eps / naive_eps
    growth_mb = max(m["growth_mb"] for m in measured)
    peak_mb = max(m["peak_mb"] for m in measured)
    say(
        f"relay / raw over {len(ratios)} rounds: min {ratios[0]:.2f}, median {ratio_median:.2f}, "
        f"max {ratios[-1]:.2f}  (target >= 0.80 at the median: "
        f"{'PASS' if ratio_median >= 0.8 else 'FAIL'}; load average now {load_average()})"
    )
    say(f"relay / naive = {ratio_vs_naive:.1f}  (target >= 20: {'PASS' if ratio_vs_naive >= 20 else 'FAIL'})")
    finish(
        {
            "events": events,
            "keys": keys,
            "relay_eps": round(relay_eps),
            "raw_eps": round(raw_eps),
            "naive_eps": round(naive_eps),
            "ratio_vs_raw": round(ratio_median, 3),
            "ratio_min": round(ratios[0], 3),
            "ratio_median": round(ratio_median, 3),
            "ratio_max": round(ratios[-1], 3),
            "rounds": len(ratios),
            "ratio_vs_naive": round(ratio_vs_naive, 1),
            "relay_peak_rss_mb": round(peak_mb, 1),
            "relay_rss_growth_mb": growth_mb,
            "batch_size": batch_size,
            "naive_sample": len(rows),
            "brokers": options.brokers,
            "tracing": options.tracing,
            "kafka_broker": broker_version(),
            "kafka_python": kafka_python_version,
            "relay_kafka_client": settings.KAFKA_CLIENT,
            "outbox_storage": outbox_storage() or "defaults",
            **({"replication_factor": 3, "min_insync_replicas": 2} if cluster else {}),
            **(
                {
                    "latency_rate": latency_rate,
                    "latency_p50_ms": round(latency["p50_ms"], 1),
                    "latency_p99_ms": round(latency["p99_ms"], 1),
                    "latency_events": latency["events"],
                }
                if latency
                else {}
            ),
        }
    )


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def broker_version() -> str:
    """The brokers' Kafka version as kafka-python infers it from their API versions (major.minor)."""
    from django.conf import settings
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY)
    try:
        # kafka-python's only version probe is on the admin's private client.
        return ".".join(str(part) for part in admin._client.check_version())  # type: ignore[attr-defined]  # private: not in the stubs
    finally:
        admin.close()


def settings_print(
    *,
    batch_size: int,
    events: int,
    rounds: int,
    keys: int,
    brokers: int,
    producer: dict,
    naive: dict,
    tracing: bool,
    kafka_python: str,
) -> None:
    from django.conf import settings

    shown = (
        "acks",
        "enable_idempotence",
        "max_in_flight_requests_per_connection",
        "linger_ms",
        "batch_size",
        "compression_type",
    )
    say(
        f"settings: {events} events x {rounds} rounds over {keys} keys, 3 partitions, {brokers} broker(s); "
        f"relay batch size {batch_size} (OUTBOX_BATCH_SIZE={settings.OUTBOX_BATCH_SIZE}), "
        f"OUTBOX_FAIR_SHARE={settings.OUTBOX_FAIR_SHARE}, metrics on, tracing {'on' if tracing else 'off'}"
    )
    say(
        f"  relay producer: KAFKA_CLIENT={settings.KAFKA_CLIENT}; raw producer: kafka-python; both: "
        + ", ".join(f"{name}={producer.get(name)}" for name in shown)
    )
    say("  naive relay producer: kafka-python defaults (" + ", ".join(sorted(naive)) + " set)")
    say(
        f"  Kafka broker {broker_version()} (from its API versions), kafka-python {kafka_python}, "
        f"load average {load_average()}"
    )
    say(f"  outbox table storage: {outbox_storage() or 'defaults'} (migration 0003 sets fillfactor=50)")


def outbox_storage() -> str:
    """The outbox table's storage parameters as PostgreSQL has them (fillfactor: whether the
    lease update can be a HOT update)."""
    from django.db import connection

    from outbox.models import OutboxEvent

    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [OutboxEvent._meta.db_table])
        found = cursor.fetchone()
    return ",".join(found[0]) if found and found[0] else ""


def tracing_on() -> None:
    """OpenTelemetry on, as in production (batched export), into an exporter that drops spans."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from commerce.observability.telemetry import telemetry_configure

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    telemetry_configure(exporter=Drop(), batch=True, instrument_django=False, set_global=False)


def cluster_use() -> tuple[KafkaCluster, bool]:
    """The local 3-node cluster, started if it does not answer (then True: this run stops it);
    this process's clients on it."""
    from django.conf import settings

    from tests.support.kafka import KafkaCluster

    cluster = KafkaCluster()
    started_here = not cluster.is_up()
    say(f"cluster: {cluster.bootstrap} ({'starting it' if started_here else 'running'})")
    cluster.start()
    settings.KAFKA_BOOTSTRAP_SERVERS = list(cluster.bootstrap_list)
    return cluster, started_here


def cluster_topics_fresh(cluster: KafkaCluster) -> dict[str, str]:
    """Fresh topics on the cluster, made by the project's own topics_ensure (RF 3, min ISR 2)."""
    import uuid

    from django.conf import settings

    from outbox.topics import topics_ensure

    suffix = uuid.uuid4().hex[:8]
    settings.KAFKA_TOPICS = {"catalog-events": f"bench-{suffix}-catalog-events"}
    report = topics_ensure(partitions=3)
    say(
        f"cluster topics: {report.created} (replication factor {report.policy.replication_factor}, "
        f"min.insync.replicas {report.policy.min_insync_replicas})"
    )
    for name in report.created:
        cluster.wait_until(lambda name=name: len(cluster.leaders(name)) == 3, 30, f"leaders of {name}")
    return dict(settings.KAFKA_TOPICS)


def commit_to_ack_latency(*, topic: str, rate: int, seconds: float) -> dict[str, float]:
    """Commit `rate` events/s in transactions of 10 for `seconds` while a relay loop drains them."""
    from django.db import connection

    from outbox.models import OutboxEvent
    from outbox.relay import relay_drain
    from tests.outbox.events_for_tests import outbox_rows_bulk

    stop = threading.Event()

    def relay_loop() -> None:
        try:
            while not stop.is_set() or OutboxEvent.objects.filter(status="pending").exists():
                if not relay_drain(time_budget_s=1.0).batches:
                    time.sleep(0.002)
        finally:
            connection.close()

    relay = threading.Thread(target=relay_loop, name="relay-loop")
    relay.start()
    per_tick = 10
    tick_s = per_tick / rate
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < seconds:
        outbox_rows_bulk(topic=topic, keys=per_tick, per_key=1)  # one INSERT, committed at once
        ticks += 1
        time.sleep(max(0.0, started + ticks * tick_s - time.monotonic()))
    committed_for = time.monotonic() - started
    stop.set()
    relay.join(timeout=120)
    rows = list(OutboxEvent.objects.filter(status="published").values_list("created_at", "published_at"))
    # Published rows all have their published_at (the None is the type's, for the other statuses).
    millis = sorted(
        (published - created).total_seconds() * 1000 for created, published in rows if published is not None
    )
    quantiles = statistics.quantiles(millis, n=100)
    return {
        "events": len(millis),
        "achieved_rate": ticks * per_tick / committed_for,
        "p50_ms": statistics.median(millis),
        "p99_ms": quantiles[98],
        "max_ms": millis[-1],
    }


if __name__ == "__main__":
    main()
