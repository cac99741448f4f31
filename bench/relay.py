"""Relay throughput: drain pre-recorded outbox rows on PostgreSQL to a 3-partition topic.

Baselines in the same run: (a) the raw kafka-python producer (same `producer_config()`) sending
the very same records (topic, key, value, headers built as the relay builds them) and flushing;
(b) a naive relay on a sample (one row at a time: send, wait for the ack, `save()` the row as
published). Targets: relay >= 50% of raw and >= 20x naive; relay memory flat however many rows
it drains (RSS growth between 25% and 100% of the drain).

    .venv/bin/python bench/relay.py [--quick] [--events N] [--batch-size N] [--profile]
"""

from __future__ import annotations

import argparse
import json
import time

from common import (RssSampler, django_setup, finish, peak_rss_mb, peak_rss_reset, say,
                    tables_empty, topics_delete, topics_fresh)

KEYS = 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--naive-sample", type=int, default=None)
    parser.add_argument("--profile", action="store_true",
                        help="also drain once more under cProfile and print the top functions")
    options = parser.parse_args()
    # Quick still drains 50,000 (about 20 s here): with fewer, the drain's fixed start-up weighs
    # on the ratio (10,000 events read 0.50x raw where 100,000 read 0.54x, same machine).
    events = options.events or (50_000 if options.quick else 100_000)
    naive_sample = options.naive_sample or (500 if options.quick else 2000)
    django_setup()

    from django.db.models import TextField
    from django.db.models.functions import Cast
    from kafka import KafkaProducer

    from outbox.kafka import producer_config, producer_get, producer_reset
    from outbox.models import OutboxEvent
    from outbox.relay import SEND_FIELDS, ClaimedRow, _record_headers, relay_drain
    from tests.outbox.events_for_tests import outbox_rows_bulk

    def record_pending(count: int, keys: int) -> int:
        """Bulk-insert `count` pending rows over `keys` keys, in chunks (bounded memory)."""
        chunk = max(keys, 20_000 // keys * keys)
        for start in range(0, count, chunk):
            outbox_rows_bulk(topic=topic, keys=keys, per_key=max(1, min(chunk, count - start) // keys))
        return OutboxEvent.objects.filter(status="pending").count()

    def records_as_relay_sends() -> list[tuple[str, bytes, bytes, list]]:
        """(topic, key, value, headers) of every row, exactly as `_send_all` builds them."""
        rows = (OutboxEvent.objects.annotate(payload_text=Cast("payload", output_field=TextField()))
                .order_by("seq").values_list(*SEND_FIELDS, "payload_text"))
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
            result = relay_drain(batch_size=options.batch_size, time_budget_s=2.0)
            published += result.published
            if result.failed or result.dead:
                say(f"  relay reported failures: {result.as_dict()} {result.errors[-1:]}")
            if not result.batches:
                break
            if progress:
                elapsed = time.perf_counter() - started
                say(f"  published {published}/{total} ({published / elapsed:,.0f} events/s so far)")
        return published, time.perf_counter() - started

    topics = topics_fresh(["catalog-events"])
    topic = topics["catalog-events"]
    tables_empty(OutboxEvent)
    try:
        say(f"recording {events} pending events across {KEYS} keys (bulk inserts) ...")
        total = record_pending(events, KEYS)
        say(f"  {total} pending rows")

        say(f"relay: relay_drain(batch_size={options.batch_size}) until nothing is pending ...")
        producer_reset()
        producer_get().partitions_for(topic)  # a long-lived producer knows its topics already
        peak_rss_reset()  # the relay's own peak, not the recording's
        with RssSampler() as sampler:
            published, relay_seconds = drain_all(total)
        relay_peak_mb = peak_rss_mb()  # before the baselines load their records into memory
        pending_left = OutboxEvent.objects.filter(status="pending").count()
        # Each published row must carry the partition and offset Kafka gave it: distinct pairs.
        positions = (OutboxEvent.objects.filter(status="published", kafka_offset__isnull=False)
                     .values_list("kafka_partition", "kafka_offset").distinct().count())
        if positions != published:
            raise SystemExit(f"relay wrote {positions} distinct partition/offset pairs for {published} rows")
        relay_eps = published / relay_seconds
        say(f"relay: {published} events in {relay_seconds:.2f} s = {relay_eps:,.0f} events/s "
            f"(peak RSS {relay_peak_mb:.0f} MB, RSS {sampler.at(0.25):.0f} MB at 25% -> "
            f"{sampler.samples[-1][1]:.0f} MB at 100%: growth {sampler.growth_mb} MB; "
            f"{pending_left} left pending)")

        say("raw producer: building the same records, then send + flush (timed) ...")
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
        say(f"raw producer: {len(records)} records in {raw_seconds:.2f} s = {raw_eps:,.0f} events/s")
        del records

        say(f"naive relay: {naive_sample} rows, one at a time (send, wait for the ack, save()) ...")
        tables_empty(OutboxEvent)
        record_pending(naive_sample, min(100, naive_sample))
        naive_producer = KafkaProducer(**producer_config())
        naive_producer.partitions_for(topic)
        rows = list(OutboxEvent.objects.filter(status="pending").order_by("seq"))
        started = time.perf_counter()
        for n, row in enumerate(rows, 1):
            claimed = ClaimedRow.from_orm_values((
                row.seq, row.event_id, row.topic, row.key, row.type, row.event_version,
                row.aggregatetype, row.aggregateid, row.aggregate_version, row.headers, row.occurred_at,
                row.attempts, ""))
            metadata = naive_producer.send(
                row.topic, key=row.key.encode(), headers=_record_headers(claimed),
                value=json.dumps(row.payload).encode()).get(timeout=30)
            row.status = OutboxEvent.Status.PUBLISHED
            row.kafka_partition, row.kafka_offset = metadata.partition, metadata.offset
            row.save()
            if n % max(1, len(rows) // 4) == 0:
                say(f"  naive: {n}/{len(rows)} ({n / (time.perf_counter() - started):,.0f} events/s)")
        naive_seconds = time.perf_counter() - started
        naive_producer.close()
        naive_eps = len(rows) / naive_seconds
        say(f"naive relay: {len(rows)} rows in {naive_seconds:.2f} s = {naive_eps:,.0f} events/s "
            f"(extrapolated: {events} events would take {events / naive_eps:,.0f} s)")

        if options.profile:
            import cProfile
            import pstats

            tables_empty(OutboxEvent)
            record_pending(events, KEYS)
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

    ratio_vs_raw = relay_eps / raw_eps
    ratio_vs_naive = relay_eps / naive_eps
    say(f"relay / raw   = {ratio_vs_raw:.2f}  (target >= 0.50: {'PASS' if ratio_vs_raw >= 0.5 else 'FAIL'})")
    say(f"relay / naive = {ratio_vs_naive:.1f}  (target >= 20: {'PASS' if ratio_vs_naive >= 20 else 'FAIL'})")
    finish({"events": published, "relay_eps": round(relay_eps), "raw_eps": round(raw_eps),
            "naive_eps": round(naive_eps), "ratio_vs_raw": round(ratio_vs_raw, 3),
            "ratio_vs_naive": round(ratio_vs_naive, 1), "relay_peak_rss_mb": round(relay_peak_mb, 1),
            "relay_rss_growth_mb": sampler.growth_mb, "batch_size": options.batch_size,
            "naive_sample": len(rows)})


if __name__ == "__main__":
    main()
