"""Commit -> acknowledged by Kafka: how long an event waits between its transaction's commit and
the broker's acknowledgement of its record, with the production wake-up (NOTIFY + relay loop).

The writer (this process) records one event per transaction through `outbox_record` at a steady
rate (an open-loop schedule: event i is due at i/rate; a writer that falls behind commits what is
due in one transaction, at most 10 events), and notes `time.monotonic()` as its COMMIT returns.
The relays are `relay_loop` processes (outbox/relay/listen.py, as `manage.py relay_loop` runs
it) whose producer notes `time.monotonic()` in the record's acknowledgement callback (the
producer's I/O thread, as the broker's answer is read). One clock: CLOCK_MONOTONIC is
system-wide on Linux, so the two processes' readings are comparable. The commit's own round
trip is not counted (the clock is read after it returns; the NOTIFY left at the commit itself).

Rates 100, 1,000 and 5,000 events/s, with one relay and with two, for each of the relay's Kafka
clients (`--clients`, KAFKA_CLIENT: kafka-python, the default, then confluent) in turn. Targets: p50 <= 2 ms and
p99 <= 8 ms at 100/s; p99 <= 25 ms at 1,000/s.

`--blocked-backlog N` measures the same behind N pending rows that no claim may take (1,000 keys,
each held back by its oldest row in backoff, as during a partial outage): the relay still has to
serve what commits now.

    .venv/bin/python bench/latency.py [--quick] [--rates 100,1000,5000] [--seconds S] [--blocked-backlog N]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PROJECT_DIR, django_setup, finish, say, tables_empty, topics_delete, topics_fresh
from open_loop import commit_on_schedule

KEYS = 100
MAX_PER_TRANSACTION = 10
TARGETS = {"p50_ms": 2.0, "p99_ms": 8.0, "p99_ms_1000": 25.0}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies_ms, 0.50), 2),
        "p95_ms": round(percentile(latencies_ms, 0.95), 2),
        "p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "max_ms": round(max(latencies_ms), 2) if latencies_ms else float("nan"),
        "events": len(latencies_ms),
    }


def versions() -> dict[str, str]:
    """Detected at run time: the broker's (from its ApiVersions answer, and the jars of
    KAFKA_JARS_DIR when set), the clients', PostgreSQL's."""
    from django.conf import settings
    from django.db import connection
    from kafka import KafkaAdminClient
    from kafka.version import __version__ as kafka_version

    found = {"kafka-python": kafka_version}
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY)
    try:
        # The version the broker answered is kept on the admin's client only (kafka-python 3.0).
        found["broker_api"] = ".".join(map(str, admin._client.check_version()))  # type: ignore[attr-defined]  # private
    finally:
        admin.close()
    jars = os.environ.get("KAFKA_JARS_DIR")
    if jars and Path(jars).is_dir():
        for jar in sorted(Path(jars).glob("kafka-clients-*.jar")):
            found["broker_jar"] = jar.stem.removeprefix("kafka-clients-")
    try:
        import confluent_kafka

        found["confluent-kafka"] = importlib.metadata.version("confluent-kafka")
        found["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        found["postgresql"] = cursor.fetchone()[0]
    return found


# --- the relay processes ----------------------------------------------------------------------


def relay_child(out_path: str) -> None:
    """One relay loop whose producer notes each acknowledgement; dumps them at SIGTERM."""
    django_setup()
    from django.conf import settings
    from kafka import KafkaProducer

    from outbox.relay.listen import Waker, relay_loop
    from outbox.relay.stopping import relay_stop_request

    producer_class: Any = KafkaProducer
    if settings.KAFKA_CLIENT == "confluent":
        from outbox.kafka_confluent import ConfluentProducer

        producer_class = ConfluentProducer

    acks: list[tuple[str, float]] = []
    monotonic = time.monotonic
    original_send = producer_class.send

    def send(self: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        future = original_send(self, topic, *args, **kwargs)
        event_id = kwargs["headers"][0][1].decode()  # record_headers puts event_id first
        future.add_callback(lambda _metadata: acks.append((event_id, monotonic())))
        return future

    producer_class.send = send  # notes each ack, in this child process only
    waker = Waker()

    def stop(*_: object) -> None:
        relay_stop_request()
        waker.wake()

    signal.signal(signal.SIGTERM, stop)
    relay_loop(waker=waker, on_listening=lambda: print("relay loop listening", flush=True))
    Path(out_path).write_text(json.dumps(acks))


class Relays:
    """`count` relay loop processes for the duration of a block."""

    def __init__(self, count: int, env: dict[str, str], workdir: Path) -> None:
        self.count, self.env, self.workdir = count, env, workdir
        self.processes: list[tuple[subprocess.Popen[str], Path]] = []

    def __enter__(self) -> Relays:
        for n in range(self.count):
            out = self.workdir / f"acks-{self.count}-{n}.json"
            popen = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--relay-child", str(out)],
                env=self.env,
                cwd=PROJECT_DIR,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.processes.append((popen, out))
        for popen, _ in self.processes:
            assert popen.stdout is not None  # stdout=PIPE
            line = popen.stdout.readline()
            if "listening" not in line:
                raise SystemExit(f"relay loop did not start: {line!r}")
        return self

    def acks(self) -> dict[str, float]:
        """Stop the relays; every event's first acknowledgement (monotonic seconds)."""
        found: dict[str, float] = {}
        for popen, _ in self.processes:
            popen.send_signal(signal.SIGTERM)
        for popen, out in self.processes:
            popen.wait(timeout=60)
            for event_id, at in json.loads(out.read_text()):
                found[event_id] = min(at, found.get(event_id, at))
        return found

    def __exit__(self, *exc: object) -> None:
        for popen, _ in self.processes:
            if popen.poll() is None:
                popen.kill()


# --- the writer -------------------------------------------------------------------------------


def commit_at_rate(rate: int, seconds: float, key_offset: int) -> tuple[dict[str, float], float, float]:
    """Commit rate x seconds events on schedule; (event id -> commit time, achieved rate,
    events per transaction)."""
    from django.db import transaction

    from outbox.recording import outbox_record
    from tests.outbox.events_for_tests import SequenceRecorded

    def commit(first: int, count: int) -> list[str]:
        ids = []
        with transaction.atomic():
            for n in range(first, first + count):
                event = SequenceRecorded(product_id=f"k{(key_offset + n) % KEYS}", sequence=n)
                outbox_record(event=event)
                ids.append(str(event.event_id))
        return ids

    return commit_on_schedule(rate=rate, seconds=seconds, max_per_transaction=MAX_PER_TRANSACTION, commit=commit)


def wait_published(count: int, timeout_s: float = 120.0) -> None:
    from outbox.models import OutboxEvent

    deadline = time.monotonic() + timeout_s
    while OutboxEvent.objects.filter(status="published").count() < count:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"only {OutboxEvent.objects.filter(status='published').count()} of "
                f"{count} rows published after {timeout_s:.0f} s"
            )
        time.sleep(0.1)


def blocked_backlog_record(rows: int, topic: str) -> None:
    """`rows` pending rows over 1,000 keys of their own, each key held back by its oldest row,
    put in backoff for an hour: nothing of it is claimable while the benchmark runs."""
    from django.db import connection

    from tests.outbox.events_for_tests import outbox_rows_bulk

    keys = 1000
    for start in range(0, rows, 20 * keys):
        outbox_rows_bulk(topic=topic, keys=keys, per_key=max(1, min(20 * keys, rows - start) // keys))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE outbox_outboxevent SET attempts = 1, available_at = now() + interval '1 hour' "
            "WHERE seq IN (SELECT min(seq) FROM outbox_outboxevent GROUP BY key)"
        )
        cursor.execute("ANALYZE outbox_outboxevent")


def measure(
    relays: int,
    rates: list[int],
    seconds: dict[int, float],
    env: dict[str, str],
    workdir: Path,
    client: str = "kafka-python",
    blocked_backlog: int = 0,
) -> dict[int, dict[str, float]]:
    """The latencies at each rate, with `relays` relay loops whose producer is `client`'s."""
    from outbox.models import OutboxEvent

    tables_empty(OutboxEvent)
    if blocked_backlog:
        blocked_backlog_record(blocked_backlog, env["KAFKA_TOPIC_CATALOG"])
    phases: list[tuple[int, dict[str, float], float, float]] = []
    with Relays(relays, dict(env, KAFKA_CLIENT=client), workdir) as running:
        warm, _, _ = commit_at_rate(100, 0.5, 0)  # producers connected, metadata known
        published = len(warm)
        wait_published(published)
        for rate in rates:
            committed, achieved, per_tx = commit_at_rate(rate, seconds[rate], published)
            published += len(committed)
            wait_published(published)
            phases.append((rate, committed, achieved, per_tx))
            time.sleep(0.3)
        acks = running.acks()
    results = {}
    for rate, committed, achieved, per_tx in phases:
        latencies = [(acks[event_id] - at) * 1000 for event_id, at in committed.items() if event_id in acks]
        missing = len(committed) - len(latencies)
        figures = summary(latencies)
        figures.update(achieved_rate=round(achieved), events_per_transaction=round(per_tx, 2), missing_acks=missing)
        results[rate] = figures
        say(
            f"  {client:<12} {relays} relay(s), {rate:>5}/s (committed {achieved:,.0f}/s, {per_tx:.2f} events/tx): "
            f"p50 {figures['p50_ms']:.2f} ms  p95 {figures['p95_ms']:.2f} ms  "
            f"p99 {figures['p99_ms']:.2f} ms  max {figures['max_ms']:.2f} ms  ({figures['events']} events"
            + (f", {missing} without ack" if missing else "")
            + ")"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", default="100,1000,5000")
    parser.add_argument(
        "--seconds", type=float, default=None, help="per rate (default: 100/s 20 s, others 5 s; --quick 5 s and 1 s)"
    )
    parser.add_argument(
        "--clients",
        default="kafka-python,confluent",
        help="the relay's Kafka clients to measure, each in turn (KAFKA_CLIENT); figures of the "
        "first have no prefix, the others' are prefixed with the client's name",
    )
    parser.add_argument(
        "--blocked-backlog",
        type=int,
        default=0,
        help="measure behind this many pending rows held back by their keys (none claimable)",
    )
    parser.add_argument("--relay-child", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.relay_child:
        relay_child(options.relay_child)
        return
    os.environ["OUTBOX_WAKEUP"] = "notify"
    django_setup()
    from django.conf import settings

    from outbox.kafka import producer_config

    rates = [int(rate) for rate in options.rates.split(",")]
    clients = options.clients.split(",")
    # At least 500 events per rate, so that a p99 is a p99: 100/s for 5 s (20 s), the higher
    # rates for 1 s (5 s); a writer that cannot keep the rate takes longer for the same events.
    if options.seconds:
        seconds = {rate: max(options.seconds, 500 / rate) for rate in rates}
    else:
        seconds = {
            rate: (5.0 if options.quick else 20.0) if rate <= 100 else (1.0 if options.quick else 5.0) for rate in rates
        }
    topics = topics_fresh()
    config = producer_config()
    say(
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
        f"versions {json.dumps(versions())}"
    )
    say(
        f"settings: OUTBOX_WAKEUP={settings.OUTBOX_WAKEUP} (NOTIFY + relay_loop), "
        f"OUTBOX_PRODUCER_LINGER_MS={config['linger_ms']}, acks={config['acks']}, "
        f"OUTBOX_BATCH_SIZE={settings.OUTBOX_BATCH_SIZE}, OUTBOX_LOOP_POLL_INTERVAL="
        f"{settings.OUTBOX_LOOP_POLL_INTERVAL}, {KEYS} keys, 3 partitions, one event per "
        f"transaction (up to {MAX_PER_TRANSACTION} when the writer is behind)"
        + (f"; behind a blocked backlog of {options.blocked_backlog:,} rows" if options.blocked_backlog else "")
    )
    env = dict(
        os.environ,
        KAFKA_TOPIC_CATALOG=topics["catalog-events"],
        KAFKA_TOPIC_ORDERS=topics["order-events"],
        OUTBOX_WAKEUP="notify",
        PYTHONUNBUFFERED="1",
    )
    figures: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for relays in (1, 2):
                say(f"{relays} relay loop(s):")
                for n, client in enumerate(clients):
                    results = measure(relays, rates, seconds, env, Path(workdir), client, options.blocked_backlog)
                    prefix = "" if n == 0 else f"{client.replace('-', '_')}_"
                    prefix += "" if relays == 1 else "two_relays_"
                    for rate, result in results.items():
                        suffix = "" if rate == 100 else f"_{rate}"
                        for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
                            figures[f"{prefix}{name}{suffix}"] = result[name]
                        figures[f"{prefix}achieved_rate{suffix}"] = result["achieved_rate"]
    finally:
        topics_delete(topics)
    for n, client in enumerate(clients):
        prefix = "" if n == 0 else f"{client.replace('-', '_')}_"
        for name, target in TARGETS.items():
            if prefix + name in figures:
                found = figures[prefix + name]
                say(f"{client}: target {name} <= {target} ms: {found} ms ({'met' if found <= target else 'MISSED'})")
    figures["linger_ms"] = config["linger_ms"]
    figures["blocked_backlog"] = options.blocked_backlog
    figures["clients"] = clients
    figures["load_average"] = round(os.getloadavg()[0], 2)
    finish(figures)


if __name__ == "__main__":
    main()
