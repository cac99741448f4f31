"""Relay throughput: drain pre-recorded outbox rows on PostgreSQL to a 3-partition topic.

Baselines in the same run: (a) the raw kafka-python producer sending the same records, (b) a
naive relay (one row at a time: send, wait for the ack, mark). Targets: relay >= 50% of raw and
>= 20x naive; relay memory flat however many rows it drains.

    .venv/bin/python bench/relay.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import json
import time

from common import RssSampler, django_setup, finish, peak_rss_mb, say, topics_delete, topics_fresh


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=2000)
    options = parser.parse_args()
    events = options.events or (10_000 if options.quick else 100_000)
    naive_sample = 500 if options.quick else 2000
    django_setup()

    from django.conf import settings
    from kafka import KafkaProducer

    from outbox.kafka import producer_config, producer_reset
    from outbox.models import OutboxEvent
    from outbox.relay import _record_headers, relay_drain
    from tests.outbox.events_for_tests import outbox_rows_bulk

    topics = topics_fresh(["catalog-events"])
    topic = topics["catalog-events"]
    OutboxEvent.objects.all().delete()
    try:
        say(f"recording {events} events across 1000 keys ...")
        for start in range(0, events, 20_000):
            outbox_rows_bulk(topic=topic, keys=1000, per_key=min(20_000, events - start) // 1000)
        total = OutboxEvent.objects.filter(status="pending").count()

        say(f"relay: draining {total} rows (batch {options.batch_size}) ...")
        producer_reset()
        with RssSampler() as sampler:
            started = time.perf_counter()
            published = 0
            while True:
                result = relay_drain(batch_size=options.batch_size, time_budget_s=600)
                published += result.published
                if not result.batches:
                    break
                say(f"  published {published}/{total}")
            relay_seconds = time.perf_counter() - started
        relay_eps = published / relay_seconds
        relay_peak_mb = peak_rss_mb()  # before the baselines load their records into memory
        say(f"relay: {published} events in {relay_seconds:.1f} s = {relay_eps:,.0f} events/s "
            f"(peak RSS {relay_peak_mb:.0f} MB, growth {sampler.growth_mb} MB)")

        records = [(row.key.encode(), json.dumps(row.payload, separators=(",", ":")).encode(),
                    _record_headers(row))
                   for row in OutboxEvent.objects.order_by("seq").iterator(chunk_size=5000)]
        raw_producer = KafkaProducer(**producer_config())
        started = time.perf_counter()
        for key, value, headers in records:
            raw_producer.send(topic, key=key, value=value, headers=headers)
        raw_producer.flush()
        raw_seconds = time.perf_counter() - started
        raw_producer.close()
        raw_eps = len(records) / raw_seconds
        say(f"raw producer: {len(records)} records in {raw_seconds:.1f} s = {raw_eps:,.0f} events/s")
        del records

        OutboxEvent.objects.all().delete()
        outbox_rows_bulk(topic=topic, keys=100, per_key=naive_sample // 100)
        naive_producer = KafkaProducer(**producer_config())
        rows = list(OutboxEvent.objects.order_by("seq"))
        started = time.perf_counter()
        for row in rows:
            metadata = naive_producer.send(
                row.topic, key=row.key.encode(), headers=_record_headers(row),
                value=json.dumps(row.payload, separators=(",", ":")).encode()).get(timeout=30)
            row.status, row.kafka_partition, row.kafka_offset = "published", metadata.partition, metadata.offset
            row.save(update_fields=["status", "kafka_partition", "kafka_offset"])
        naive_seconds = time.perf_counter() - started
        naive_producer.close()
        naive_eps = len(rows) / naive_seconds
        say(f"naive relay: {len(rows)} rows in {naive_seconds:.1f} s = {naive_eps:,.0f} events/s")
    finally:
        OutboxEvent.objects.all().delete()
        topics_delete(topics)

    ratio_vs_raw = relay_eps / raw_eps
    ratio_vs_naive = relay_eps / naive_eps
    say(f"relay / raw   = {ratio_vs_raw:.2f}  (target >= 0.50: {'PASS' if ratio_vs_raw >= 0.5 else 'FAIL'})")
    say(f"relay / naive = {ratio_vs_naive:.1f}  (target >= 20: {'PASS' if ratio_vs_naive >= 20 else 'FAIL'})")
    finish({"events": published, "relay_eps": round(relay_eps), "raw_eps": round(raw_eps),
            "naive_eps": round(naive_eps), "ratio_vs_raw": round(ratio_vs_raw, 3),
            "ratio_vs_naive": round(ratio_vs_naive, 1), "relay_peak_rss_mb": round(relay_peak_mb, 1),
            "relay_rss_growth_mb": sampler.growth_mb, "batch_size": options.batch_size})


if __name__ == "__main__":
    main()
