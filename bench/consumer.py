"""Back-office throughput: consume catalog and order events into the PostgreSQL projections.

Baseline in the same run: a naive consumer (one transaction and one offset commit per record).
Targets: >= 5,000 events/s, >= 10x the naive consumer, resident memory flat.

    .venv/bin/python bench/consumer.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import time
import uuid

from common import RssSampler, django_setup, finish, say, topics_delete, topics_fresh


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=2000)
    options = parser.parse_args()
    events = options.events or (10_000 if options.quick else 100_000)
    naive_sample = 1000 if options.quick else 3000
    django_setup()

    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata

    from backoffice.consumer import EventConsumer
    from backoffice.contract import ContractViolation, event_parse
    from backoffice.models import EventLog, InboxEntry, OrderLedger, ProductMetrics
    from backoffice.projections import batch_apply
    from django.conf import settings
    from tests.backoffice.stream import produce, stream_make

    def reset() -> None:
        for model in (InboxEntry, EventLog, ProductMetrics, OrderLedger):
            model.objects.all().delete()

    topics = topics_fresh()
    reset()
    try:
        say(f"producing {events} catalog and order events ...")
        records, _ = stream_make(products=200, events=events, seed=42)
        produce(records, topics)
        total = len(records)
        del records

        say(f"consumer: consuming into the projections (batches of {options.batch_size}) ...")
        consumer = EventConsumer(topics=list(topics.values()), group_id=f"bench-{uuid.uuid4().hex[:6]}",
                                 batch_size=options.batch_size, progress_every_s=5)
        with RssSampler() as sampler:
            started = time.perf_counter()
            while consumer.stats.polled < total:
                consumer.run(max_events=total, until_idle_s=10)
                if consumer.stats.polled < total and time.perf_counter() - started > 600:
                    break
            seconds = time.perf_counter() - started
        consumer.close()
        consumer_eps = consumer.stats.polled / seconds
        say(f"consumer: {consumer.stats.polled} events in {seconds:.1f} s = {consumer_eps:,.0f} events/s "
            f"(RSS growth {sampler.growth_mb} MB)")

        reset()
        naive = KafkaConsumer(*topics.values(), bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                              group_id=f"bench-naive-{uuid.uuid4().hex[:6]}", enable_auto_commit=False,
                              auto_offset_reset="earliest", max_poll_records=500)
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
                                            headers=list(record.headers))
                        batch_apply(group="naive", events=[event], poison=[])
                    except ContractViolation:
                        pass
                    naive.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                    handled += 1
        naive_seconds = time.perf_counter() - started
        naive.close()
        naive_eps = handled / naive_seconds
        say(f"naive consumer: {handled} events in {naive_seconds:.1f} s = {naive_eps:,.0f} events/s")
    finally:
        reset()
        topics_delete(topics)

    ratio = consumer_eps / naive_eps
    say(f"consumer >= 5,000 events/s: {'PASS' if consumer_eps >= 5000 else 'FAIL'}; "
        f"consumer / naive = {ratio:.1f} (target >= 10: {'PASS' if ratio >= 10 else 'FAIL'})")
    finish({"events": total, "consumer_eps": round(consumer_eps), "naive_eps": round(naive_eps),
            "ratio_vs_naive": round(ratio, 1), "rss_growth_mb": sampler.growth_mb})


if __name__ == "__main__":
    main()
