"""`make bench`: run every benchmark, then regenerate docs/BENCHMARKS.md and its plot.

Each benchmark prints its figures and, as its last line, a JSON object; this script keeps those
objects, writes them into the report with their baselines, ratios and targets, and draws
docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
BENCHMARKS = ["relay", "record", "consumer", "e2e", "payment_confirm", "latency", "peers"]
# docs/BENCHMARKS.md: above this line what `make bench` writes, below it what is written by hand.
HAND_WRITTEN_BELOW = "<!-- make bench writes what is above this line and keeps what is below it -->"


def run(name: str, quick: bool) -> dict:
    argv = [sys.executable, str(PROJECT_DIR / "bench" / f"{name}.py")] + (["--quick"] if quick else [])
    print(f"== bench/{name}.py {'--quick' if quick else ''}", flush=True)
    # Not check=True: a failed benchmark's output is printed first, below.
    process = subprocess.run(argv, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    print(process.stdout[-3000:], flush=True)
    if process.returncode != 0:
        print(process.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"bench/{name}.py failed ({process.returncode})")
    return json.loads(process.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    postgres = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_kb / 1024 / 1024:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {postgres}, Kafka 4.1.1 (single KRaft node, "
        f"scripts/kafka-local), kafka-python 3.0.12"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _rate_suffix(rate: int) -> str:
    return "" if rate == 100 else f"_{rate}"


def latency_rows(latency: dict) -> str:
    rows = []
    for rate in (100, 1000, 5000):
        x = _rate_suffix(rate)
        if f"p50_ms{x}" in latency:
            rows.append(
                f"| {rate:,}/s | {latency[f'p50_ms{x}']} | {latency[f'p95_ms{x}']} | "
                f"{latency[f'p99_ms{x}']} | {latency[f'max_ms{x}']} | "
                f"{latency.get(f'two_relays_p50_ms{x}')} | {latency.get(f'two_relays_p99_ms{x}')} |"
            )
    return "\n".join(rows)


def peer_rows(peers: dict) -> str:
    rows = []
    for rate in (100, 1000, 5000):
        x = _rate_suffix(rate)
        if f"ours_p50_ms{x}" in peers:
            rows.append(
                f"| {rate:,}/s | {peers[f'ours_p50_ms{x}']} | {peers[f'peer_p50_ms{x}']} | "
                f"{peers[f'ours_p99_ms{x}']} | {peers[f'peer_p99_ms{x}']} |"
            )
    return "\n".join(rows)


def write_report(results: dict[str, dict], quick: bool) -> None:
    relay, record, consumer, e2e, payment = (results[name] for name in BENCHMARKS[:5])
    latency, peers = results["latency"], results["peers"]
    now, before = payment["supervised"], payment.get("baseline") or {}
    unsettled = (
        ""
        if before.get("all_settled")
        else (" (the rest still waited; its percentiles cover only those, so they flatter it)")
    )
    rows = [
        (
            "relay drain",
            f"{relay['relay_eps']:,} events/s",
            f"raw producer {relay['raw_eps']:,}/s",
            f"{relay['ratio_vs_raw']:.2f}x (median of {relay.get('rounds', 1)} rounds, min "
            f"{relay.get('ratio_min', relay['ratio_vs_raw']):.2f}, "
            f"max {relay.get('ratio_max', relay['ratio_vs_raw']):.2f})",
            ">= 0.80x raw",
            verdict(relay["ratio_vs_raw"] >= 0.8),
        ),
        (
            "relay drain",
            f"{relay['relay_eps']:,} events/s",
            f"naive relay {relay['naive_eps']:,}/s",
            f"{relay['ratio_vs_naive']:.0f}x",
            ">= 20x naive",
            verdict(relay["ratio_vs_naive"] >= 20),
        ),
        (
            "relay memory",
            f"peak {relay['relay_peak_rss_mb']} MB",
            f"growth {relay['relay_rss_growth_mb']} MB",
            "",
            "flat",
            verdict(relay["relay_rss_growth_mb"] < 20),
        ),
        (
            "order placement",
            f"{record['with_outbox_ops']} orders/s",
            f"without outbox {record['without_outbox_ops']}/s",
            f"{record['overhead']:.0%} overhead",
            "<= 10% (NOTIFY on)",
            verdict(record["overhead"] <= 0.10),
        ),
        (
            "commit -> ack, 100/s",
            f"p50 {latency['p50_ms']} ms",
            f"peer p50 {peers['peer_p50_ms']} ms",
            "",
            "p50 <= 2 ms",
            verdict(latency["p50_ms"] <= 2),
        ),
        (
            "commit -> ack, 100/s",
            f"p99 {latency['p99_ms']} ms",
            f"peer p99 {peers['peer_p99_ms']} ms",
            "",
            "p99 <= 8 ms",
            verdict(latency["p99_ms"] <= 8),
        ),
        (
            "commit -> ack, 1,000/s",
            f"p99 {latency['p99_ms_1000']} ms",
            f"peer p99 {peers.get('peer_p99_ms_1000')} ms",
            "",
            "p99 <= 25 ms",
            verdict(latency["p99_ms_1000"] <= 25),
        ),
        (
            "drain vs django-reliable-outbox",
            f"{peers['ours_eps']:,} events/s",
            f"peer {peers['peer_eps']:,}/s",
            f"{peers['ratio_eps']}x",
            ">= 20x",
            verdict(peers["ratio_eps"] >= 20),
        ),
        (
            "consumer (median of rounds)",
            f"{consumer['consumer_eps']:,} events/s",
            f"min {consumer.get('consumer_eps_min', consumer['consumer_eps']):,}, max "
            f"{consumer.get('consumer_eps_max', consumer['consumer_eps']):,}",
            "",
            ">= 10,000/s",
            verdict(consumer["consumer_eps"] >= 10000),
        ),
        (
            "consumer",
            f"{consumer['consumer_eps']:,} events/s",
            f"naive consumer {consumer['naive_eps']:,}/s",
            f"{consumer['ratio_vs_naive']:.0f}x",
            ">= 10x naive",
            verdict(consumer["ratio_vs_naive"] >= 10),
        ),
        (
            "consumer memory",
            f"growth {consumer['rss_growth_mb']} MB",
            "",
            "",
            "flat",
            verdict(consumer["rss_growth_mb"] < 20),
        ),
        (
            "e2e commit -> projection",
            f"p50 {e2e['p50_ms']:.1f} ms",
            f"back office's leg p50 {e2e.get('consumer_leg_p50_ms', '-')} ms",
            "",
            "p50 <= 10 ms",
            verdict(e2e["p50_ms"] <= 10),
        ),
        (
            "e2e commit -> projection",
            f"p99 {e2e['p99_ms']:.1f} ms",
            f"back office's leg p99 {e2e.get('consumer_leg_p99_ms', '-')} ms",
            "",
            "p99 <= 40 ms",
            verdict(e2e["p99_ms"] <= 40),
        ),
        (
            "payment -> confirmed, make run's defaults",
            f"p50 {now['p50_s']} s",
            f"before issue 17: p50 {before.get('p50_s')} s",
            "",
            "",
            "",
        ),
        (
            "payment -> confirmed, make run's defaults",
            f"p99 {now['p99_s']} s",
            f"before issue 17: p99 {before.get('p99_s')} s",
            f"{payment['p99_ratio_vs_baseline']}x" if payment.get("p99_ratio_vs_baseline") else "",
            "p99 <= 2 s",
            verdict(payment["target_met"]),
        ),
    ]
    table = "\n".join(f"| {' | '.join(row)} |" for row in rows)
    text = f"""# Benchmarks

Generated by `make bench{" QUICK=1" if quick else ""}` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.
Everything down to the hand-written history is regenerated by `make bench`: do not edit it by hand.

Machine: {machine()}. Everything (PostgreSQL, Kafka, Redis, the benchmark) shares these cores,
so figures are compared with a baseline measured in the same run.

| what | measured | baseline (same run) | ratio | target | |
|---|---|---|---|---|---|
{table}

![throughput and latency](benchmarks.png)

## How each is measured

- `bench/relay.py`: {relay["events"]:,} rows pre-recorded in the outbox on PostgreSQL, drained to a
  3-partition topic by `relay_drain` (batches of {relay.get("batch_size", 2000)}); the raw kafka-python
  producer sends the same records (serialized beforehand) with the relay's producer settings; the naive
  relay sends one row, waits for its ack and saves it, on a sample.
- `bench/record.py`: `order_place` (two lines: three events per order) with the outbox receiver
  connected and disconnected, alternating rounds, medians; the NOTIFY wake-up on, a session listening.
- `bench/latency.py`: commit -> acknowledged by Kafka through the NOTIFY wake-up and `relay_loop`
  processes, one event per transaction at 100, 1,000 and 5,000 events/s, one and two relays; both
  times from CLOCK_MONOTONIC (the writer's after COMMIT returns, the relay's in the ack callback).
- `bench/peers.py`: the same latency and the drain throughput for django-reliable-outbox 0.1.1
  (its venv: requirements-peer.txt), same broker and PostgreSQL, same run.
- `bench/consumer.py`: {consumer["events"]:,} catalog and order events consumed into the projections by
  `EventConsumer` at the production batch size ({consumer.get("batch_size", 500):,}), {consumer.get("rounds", 1)} rounds
  (median, min, max); the naive consumer (kafka-python's defaults) applies one record per transaction and
  commits its offset after each, on a sample.
- `bench/e2e.py`: orders through the services at a fixed rate ({e2e["orders_per_s"]:.0f}/s achieved) with the relay
  ({e2e.get("relay", "celery_kick")}) and a real consumer; latency = the time right after the back office's
  commit - the time right after the order's COMMIT returned (the writer's on_commit hook). The back
  office's leg starts at the record's Kafka timestamp (the relay's send); split at the poll that
  returned the record: send -> polled p50 {e2e.get("consumer_to_poll_p50_ms", "-")} ms (Kafka's hop and the
  wait behind the batch being applied), polled -> committed p50 {e2e.get("consumer_apply_p50_ms", "-")} ms.
- `bench/payment_confirm.py`: `make run` for real on its defaults (SQLite, the file-based Celery
  queue) in a copy of the checkout, {payment["rate"]:g} orders/s for {payment["seconds"]:g} s through the HTTP API,
  each order paid; latency = the order's `confirmed_at` - the payment's `created_at` (includes the simulated
  gateway's 0.2 s). Deepest file queue: {now["max_queue_depth"]}. Baseline: `make run` as of
  before issue 17 (`git archive` of the commit in BASELINE_REF), same traffic: it confirmed
  {before.get("confirmed")} of {before.get("orders_paid")} paid orders within 180 s after the traffic{unsettled},
  deepest queue {before.get("max_queue_depth")}.

## Latency (commit → ack)

`bench/latency.py`: one event per transaction through `outbox_record` (NOTIFY in the statement),
`relay_loop` processes draining; p50 / p95 / p99 / max in ms (load average at the end:
{latency.get("load_average")}; `OUTBOX_PRODUCER_LINGER_MS={latency.get("linger_ms")}`).

| rate | one relay p50 | p95 | p99 | max | two relays p50 | p99 |
|---|---|---|---|---|---|---|
{latency_rows(latency)}

## Peers

`bench/peers.py`: django-reliable-outbox 0.1.1 (its defaults, NOTIFY on, Kafka destination), same
broker and PostgreSQL, same run. Drain: ours {peers["ours_eps"]:,} events/s, the peer's best
{peers["peer_eps"]:,} events/s (`--concurrency {peers.get("peer_best_concurrency")}`; by worker count
{peers.get("peer_eps_by_concurrency")}): {peers["ratio_eps"]}x (target >= 20x).

| rate | ours p50 | peer p50 | ours p99 | peer p99 |
|---|---|---|---|---|
{peer_rows(peers)}

## Raw results (the last line of each benchmark)

```json
{json.dumps(results, indent=2)}
```
"""
    report = PROJECT_DIR / "docs" / "BENCHMARKS.md"
    # What the sessions measured by hand (A/Bs, analyses, history) follows the marker: kept.
    old = report.read_text(encoding="utf-8") if report.exists() else HAND_WRITTEN_BELOW + "\n"
    if HAND_WRITTEN_BELOW not in old:
        raise SystemExit(
            f"{report} has lost its marker line ({HAND_WRITTEN_BELOW}): put it back above the hand-written part"
        )
    kept = old.split(HAND_WRITTEN_BELOW, 1)[1]
    report.write_text(text.rstrip("\n") + "\n\n" + HAND_WRITTEN_BELOW + kept, encoding="utf-8")


def plot(results: dict[str, dict]) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    relay, consumer, e2e = results["relay"], results["consumer"], results["e2e"]
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["raw producer", "relay", "naive relay", "consumer", "naive consumer"]
    values = [relay["raw_eps"], relay["relay_eps"], relay["naive_eps"], consumer["consumer_eps"], consumer["naive_eps"]]
    throughput.bar(names, values, color=["#999", "#2b6cb0", "#c53030", "#2f855a", "#c53030"])
    throughput.set_ylabel("events / s")
    throughput.set_title("throughput")
    throughput.tick_params(axis="x", rotation=20)
    percentiles = ["p50", "p95", "p99"]
    kick = [e2e["p50_ms"], e2e["p95_ms"], e2e["p99_ms"]]
    latency.plot(percentiles, kick, marker="o", label=f"wake-up: {e2e.get('relay', 'celery_kick')}")
    if "poll_only_p50_ms" in e2e:
        latency.plot(
            ["p50", "p99"], [e2e["poll_only_p50_ms"], e2e["poll_only_p99_ms"]], marker="o", label="beat polling only"
        )
    latency.set_ylabel("commit to projection, ms")
    latency.set_title("end-to-end latency")
    latency.legend()
    figure.tight_layout()
    figure.savefig(PROJECT_DIR / "docs" / "benchmarks.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    results = {name: run(name, options.quick) for name in BENCHMARKS}
    write_report(results, options.quick)
    plot(results)
    print("docs/BENCHMARKS.md and docs/benchmarks.png regenerated")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
