"""Back-office throughput: consume catalog and order events into the PostgreSQL projections.

N mixed events (likes, views, stock changes, order confirmations and cancellations, built by
tests/backoffice/stream.py in the relay's envelope) are produced to fresh 3-partition topics,
then consumed by `EventConsumer` (a new group, batches of 500) until all are applied; the
projections are checked against what the stream implies. Baseline in the same run: a naive
consumer on a sample (one transaction per record - `batch_apply` with one event - and one offset
commit per record). Both clocks start once the consumer has joined its group (a one-off cost
of a few seconds, reported apart). Targets: >= 5,000 events/s, >= 10x naive, RSS flat.

    .venv/bin/python bench/consumer.py [--quick] [--events N] [--batch-size N]
"""

from __future__ import annotations

import argparse
import time
import uuid

from common import RssSampler, django_setup, finish, say, tables_empty, topics_delete, topics_fresh


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--naive-sample", type=int, default=None)
    options = parser.parse_args()
    events = options.events or (10_000 if options.quick else 100_000)
    naive_sample = options.naive_sample or (1000 if options.quick else 3000)
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

    topics = topics_fresh(["catalog-events", "order-events"])
    reset()
    sampler = RssSampler()
    try:
        say(f"producing {events} catalog and order events to {sorted(topics.values())} ...")
        records, expected = stream_make(products=200, events=events, seed=42)
        started = time.perf_counter()
        produce(records, topics)
        total = len(records)
        say(f"  produced {total} in {time.perf_counter() - started:.1f} s")
        del records

        group = f"bench-{uuid.uuid4().hex[:8]}"
        say(f"consumer: EventConsumer(group {group}, batch_size {options.batch_size}) ...")
        consumer = EventConsumer(topics=list(topics.values()), group_id=group,
                                 batch_size=options.batch_size, progress_every_s=2)
        join_seconds = joined(consumer.consumer)
        say(f"  joined the group in {join_seconds:.1f} s (not timed)")
        with sampler:
            started = time.perf_counter()
            while consumer.stats.polled < total and not consumer.stopping:
                consumer.run(max_events=total, until_idle_s=10, on_progress=lambda line: say(f"  {line}"))
                if time.perf_counter() - started > 900:
                    say("  giving up after 900 s")
                    break
            seconds = time.perf_counter() - started
        stats = consumer.stats
        consumer.close()
        consumer_eps = stats.polled / seconds
        say(f"consumer: {stats.polled} events in {seconds:.2f} s = {consumer_eps:,.0f} events/s "
            f"({stats.batches} batches, applied {stats.applied}, duplicates {stats.duplicates}, "
            f"dead letters {stats.dead_lettered}, retries {stats.retries})")
        say(f"  RSS {sampler.at(0.25):.0f} MB at 25% -> {sampler.samples[-1][1]:.0f} MB at 100%: "
            f"growth {sampler.growth_mb} MB (peak {sampler.peak_mb:.0f} MB)")
        differences = projections_differences(expected)
        say(f"  projections exact: {'yes' if not differences else 'NO: ' + '; '.join(differences[:3])}")

        reset()
        say(f"naive consumer: {naive_sample} records, one transaction + one offset commit each ...")
        naive_group = f"bench-naive-{uuid.uuid4().hex[:8]}"
        naive = KafkaConsumer(*topics.values(), bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                              group_id=naive_group, enable_auto_commit=False,
                              auto_offset_reset="earliest", max_poll_records=500, **settings.KAFKA_SECURITY)
        joined(naive)
        handled = 0
        started = time.perf_counter()
        while handled < naive_sample:
            for tp, batch in naive.poll(timeout_ms=1000).items():
                for record in batch:
                    if handled >= naive_sample:
                        break
                    try:
                        event = event_parse(topic=record.topic, partition=record.partition,
                                            offset=record.offset, key=record.key, value=record.value,
                                            headers=list(record.headers or []))
                        batch_apply(group=naive_group, events=[event], poison=[])
                    except ContractViolation:
                        pass
                    naive.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                    handled += 1
                    if handled % max(1, naive_sample // 4) == 0:
                        say(f"  naive: {handled}/{naive_sample} "
                            f"({handled / (time.perf_counter() - started):,.0f} events/s)")
        naive_seconds = time.perf_counter() - started
        naive.close()
        naive_eps = handled / naive_seconds
        say(f"naive consumer: {handled} events in {naive_seconds:.2f} s = {naive_eps:,.0f} events/s "
            f"(extrapolated: {total} events would take {total / naive_eps:,.0f} s)")
    finally:
        reset()
        topics_delete(topics)

    ratio = consumer_eps / naive_eps
    say(f"consumer {consumer_eps:,.0f} events/s (target >= 5,000: {'PASS' if consumer_eps >= 5000 else 'FAIL'})")
    say(f"consumer / naive = {ratio:.1f} (target >= 10: {'PASS' if ratio >= 10 else 'FAIL'})")
    finish({"events": stats.polled, "consumer_eps": round(consumer_eps), "naive_eps": round(naive_eps),
            "ratio_vs_naive": round(ratio, 1), "rss_growth_mb": sampler.growth_mb,
            "rss_peak_mb": round(sampler.peak_mb, 1), "join_seconds": round(join_seconds, 1),
            "batch_size": options.batch_size, "projections_exact": not differences})


if __name__ == "__main__":
    main()
