"""Side by side with the strongest Django peer, django-reliable-outbox 0.1.1, in the same run, on
the same PostgreSQL server and the same Kafka broker.

- Drain throughput. Ours: bench/relay.py's drain at the production OUTBOX_BATCH_SIZE (pre-recorded
  rows, `relay_drain` until none is pending; its figure `relay_eps`). The peer: the same number of
  pre-recorded messages of the same shape (100 keys) drained by `outbox_worker --burst --concurrency N`
  for N in 1, 4 (and 16 without --quick), to its Kafka destination; its best N is the figure.
- Commit -> acknowledged latency at 100, 1,000 and 5,000 events/s, measured as bench/latency.py
  measures it (one event per transaction through the public recording API, the writer's
  CLOCK_MONOTONIC after COMMIT returns vs. the relay's when the broker's ack is known): ours with
  one relay loop (NOTIFY) on each of its Kafka clients (kafka-python, the default, before the
  peer; confluent, KAFKA_CLIENT=confluent, after it), the peer with one `outbox_worker` (NOTIFY,
  its default) at its best concurrency.

The peer runs in a venv of its own (it needs Python >= 3.12; bench/peer_child.py is its side):
    ~/.pyenv/versions/3.12.1/bin/python -m venv var/peer-venv
    var/peer-venv/bin/pip install -r requirements-peer.txt
Its settings are its documented defaults (BATCH_SIZE 10, NOTIFY on, LEASE 60 s) with the Kafka
destination (confluent-kafka; `deliver` produces and flushes, i.e. waits for each ack).
Targets: our latency <= the peer's at every rate; our throughput >= 20x the peer's best.

    .venv/bin/python bench/peers.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_DIR, _database_ensure, django_setup, finish, say, topics_delete, topics_fresh
from latency import measure, summary, versions

PEER_PYTHON = Path(os.environ.get("PEER_PYTHON", PROJECT_DIR / "var" / "peer-venv" / "bin" / "python"))
PEER_CHILD = Path(__file__).resolve().parent / "peer_child.py"
DEFAULT_PEER_DATABASE_URL = "postgres://commerce:commerce@127.0.0.1:5432/commerce_bench_peer"


class Peer:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *args: object, timeout: float = 900) -> str:
        done = subprocess.run(
            [str(PEER_PYTHON), str(PEER_CHILD), *map(str, args)],
            env=self.env,
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"peer {args[0]} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def last_json(self, *args: object) -> dict:
        return json.loads(self.run(*args).strip().splitlines()[-1])

    def delivered(self) -> int:
        import psycopg

        with psycopg.connect(self.env["PEER_DATABASE_URL"], autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM reliable_outbox_outboxmessage WHERE status = 'delivered'"
            ).fetchone()
            assert row is not None  # count(*) answers one row
            return int(row[0])

    def wait_delivered(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.delivered() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


def peer_throughput(peer: Peer, messages: int, concurrencies: list[int]) -> dict[int, float]:
    found = {}
    for concurrency in concurrencies:
        peer.run("truncate")
        peer.run("fill", messages)
        result = peer.last_json("drain", concurrency)
        eps = result["messages"] / result["seconds"]
        found[concurrency] = eps
        say(
            f"  peer, outbox_worker --burst --concurrency {concurrency}: {result['messages']} messages "
            f"in {result['seconds']:.2f} s = {eps:,.0f} events/s"
            + (f" ({result['left']} left undelivered)" if result["left"] else "")
        )
    return found


def peer_latency(
    peer: Peer, rates: list[int], seconds: dict[int, float], concurrency: int, workdir: Path
) -> dict[int, dict[str, float]]:
    peer.run("truncate")
    out = workdir / "peer-acks.json"
    worker = subprocess.Popen(
        [str(PEER_PYTHON), str(PEER_CHILD), "worker", str(out), str(concurrency)],
        env=peer.env,
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    phases = []
    try:
        assert worker.stdout is not None  # stdout=PIPE
        if "listening" not in worker.stdout.readline():
            raise SystemExit("the peer's worker did not start")
        warm = peer.last_json("write", 100, 0.5, 0)
        published = len(warm["committed"])
        peer.wait_delivered(published, 60)
        for rate in rates:
            result = peer.last_json("write", rate, seconds[rate], published)
            published += len(result["committed"])
            if not peer.wait_delivered(published, 600):
                say(f"  peer: not every message of {rate}/s delivered within 600 s")
            phases.append((rate, result))
            time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    acks = dict(json.loads(out.read_text()))
    results = {}
    for rate, result in phases:
        latencies = [
            (acks[message_id] - at) * 1000 for message_id, at in result["committed"].items() if message_id in acks
        ]
        figures = summary(latencies)
        figures.update(achieved_rate=round(result["achieved_rate"]))
        results[rate] = figures
        say(
            f"  peer, {rate:>5}/s (committed {result['achieved_rate']:,.0f}/s, "
            f"{result['per_transaction']:.2f} events/tx): p50 {figures['p50_ms']:.2f} ms  "
            f"p95 {figures['p95_ms']:.2f} ms  p99 {figures['p99_ms']:.2f} ms  max {figures['max_ms']:.2f} ms "
            f"({figures['events']} events)"
        )
    return results


def ours_throughput(events: int, batch_size: int) -> float:
    # At the production batch size (OUTBOX_BATCH_SIZE), as issue 15 §4 asks of bench/relay.py.
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "relay.py"),
            "--events",
            str(events),
            "--naive-sample",
            "100",
            "--batch-size",
            str(batch_size),
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench/relay.py failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    say(
        f"  ours, bench/relay.py --events {events}: relay {figures['relay_eps']:,} events/s "
        f"(batch size {figures.get('batch_size')}; raw producer {figures['raw_eps']:,} events/s)"
    )
    return float(figures["relay_eps"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", default="100,1000,5000")
    options = parser.parse_args()
    if not PEER_PYTHON.exists():
        raise SystemExit(
            f"{PEER_PYTHON} is missing: ~/.pyenv/versions/3.12.1/bin/python -m venv "
            "var/peer-venv && var/peer-venv/bin/pip install -r requirements-peer.txt"
        )
    os.environ["OUTBOX_WAKEUP"] = "notify"
    django_setup()
    from django.conf import settings

    from outbox.kafka import producer_config
    from tests.support.kafka import kafka_topics_create, kafka_topics_delete

    rates = [int(rate) for rate in options.rates.split(",")]
    # Phases long enough for a p99 (>= 500 events), short enough that the peer's backlog at the
    # rates above its throughput drains in minutes: 100/s for 5 s (20 s), the others 1 s (5 s).
    seconds = {
        rate: (5.0 if options.quick else 20.0) if rate <= 100 else (1.0 if options.quick else 5.0) for rate in rates
    }
    peer_url = os.environ.get("BENCH_PEER_DATABASE_URL", DEFAULT_PEER_DATABASE_URL)
    _database_ensure(peer_url)
    bootstrap = ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)
    peer_topic = f"bench-peer-{os.getpid()}"
    kafka_topics_create(bootstrap, [peer_topic], partitions=3)
    peer = Peer(
        dict(
            os.environ,
            PEER_DATABASE_URL=peer_url,
            PEER_TOPIC=peer_topic,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            PYTHONUNBUFFERED="1",
        )
    )
    peer.run("migrate")
    found = versions()
    found.update(peer.last_json("versions"))
    say(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; versions {json.dumps(found)}")
    config = producer_config()
    say(
        f"ours: OUTBOX_WAKEUP=notify + one relay_loop, OUTBOX_PRODUCER_LINGER_MS={config['linger_ms']}, "
        f"acks={config['acks']}, OUTBOX_BATCH_SIZE={settings.OUTBOX_BATCH_SIZE}; peer: its defaults "
        "(BATCH_SIZE 10, NOTIFY on), KafkaDestination with confluent-kafka defaults (acks=all, "
        "idempotence on), each deliver flushed"
    )
    concurrencies = [1, 4] if options.quick else [1, 4, 16]
    figures: dict[str, object] = {}
    topics = topics_fresh()
    env = dict(
        os.environ,
        KAFKA_TOPIC_CATALOG=topics["catalog-events"],
        KAFKA_TOPIC_ORDERS=topics["order-events"],
        OUTBOX_WAKEUP="notify",
        PYTHONUNBUFFERED="1",
    )
    try:
        say("drain throughput:")
        peer_messages = 1000 if options.quick else 3000
        peer_eps = peer_throughput(peer, peer_messages, concurrencies)
        best = max(peer_eps, key=lambda concurrency: peer_eps[concurrency])
        ours_eps = ours_throughput(20_000 if options.quick else 100_000, settings.OUTBOX_BATCH_SIZE)
        say("commit -> ack latency:")
        with tempfile.TemporaryDirectory() as workdir:
            ours = measure(1, rates, seconds, env, Path(workdir), "kafka-python")
            theirs = peer_latency(peer, rates, seconds, best, Path(workdir))
            ours_confluent = measure(1, rates, seconds, env, Path(workdir), "confluent")
    finally:
        topics_delete(topics)
        kafka_topics_delete(bootstrap, [peer_topic])
    say("")
    say(f"{'':>22} {'ours':>10} {'confluent':>10} {'peer':>10} {'peer/ours':>10} {'peer/conf.':>10}")
    for rate in rates:
        for name in ("p50_ms", "p99_ms"):
            mine, mine_confluent, peer_figure = ours[rate][name], ours_confluent[rate][name], theirs[rate][name]
            say(
                f"{f'{name} at {rate}/s':>22} {mine:>10.2f} {mine_confluent:>10.2f} {peer_figure:>10.2f} "
                f"{peer_figure / mine if mine else float('nan'):>10.2f} "
                f"{peer_figure / mine_confluent if mine_confluent else float('nan'):>10.2f}"
            )
            suffix = "" if rate == 100 else f"_{rate}"
            figures[f"ours_{name}{suffix}"] = mine
            figures[f"ours_confluent_{name}{suffix}"] = mine_confluent
            figures[f"peer_{name}{suffix}"] = peer_figure
    ratio_eps = ours_eps / peer_eps[best]
    say(
        f"{'drain events/s':>22} {ours_eps:>10,.0f} {peer_eps[best]:>10,.0f} (peer at --concurrency {best}; "
        f"ours / peer = {ratio_eps:.1f}x, target >= 20x: {'met' if ratio_eps >= 20 else 'MISSED'})"
    )
    for client, mine_by_rate in (("kafka-python", ours), ("confluent", ours_confluent)):
        latency_met = all(
            mine_by_rate[rate][name] <= theirs[rate][name] for rate in rates for name in ("p50_ms", "p99_ms")
        )
        say(f"our latency ({client}) <= the peer's at every rate (p50, p99): {'met' if latency_met else 'MISSED'}")
    figures.update(
        ours_eps=round(ours_eps),
        peer_eps=round(peer_eps[best]),
        ratio_eps=round(ratio_eps, 1),
        peer_best_concurrency=best,
        peer_eps_by_concurrency={str(k): round(v) for k, v in peer_eps.items()},
        load_average=round(os.getloadavg()[0], 2),
    )
    finish(figures)


if __name__ == "__main__":
    main()
