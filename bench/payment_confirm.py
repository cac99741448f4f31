"""Payment -> order confirmed on `make run`'s defaults (SQLite, the file-based Celery queue).

`make run` for real (scripts/run_local.py, every component) in a copy of the checkout, driven
through its HTTP API at a fixed rate: each order is placed, then paid; latency is the order's
`confirmed_at` minus the payment's `created_at` (one clock: the database's rows). It includes the
simulated gateway's answer delay (PAYMENT_SIM_DELAY, 0.2 s), the HTTP callback and the order's
reaction. Payments the simulated gateway fails (10 %) cancel their order and are not counted.
The depth of the file queue (messages waiting, per queue) is sampled during the run.

Baseline in the same run (unless --no-baseline): `make run` as it was before issue 17 (the
checkout at BASELINE_REF, exported with `git archive`): one worker with beat, relay kicks on the
domain queue, kombu's own file transport. Target: p99 <= 2 s.

    .venv/bin/python bench/payment_confirm.py [--quick] [--rate 10] [--seconds 60] [--no-baseline]

Needs a Kafka broker at KAFKA_BOOTSTRAP_SERVERS (scripts/kafka-local start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.local_stack import PROJECT_DIR, LocalStack, project_copy

SETTLE_TIMEOUT_S = 180.0
BASELINE_REF = "c7b26bc"  # the last commit before issue 17's changes to make run
BASELINE_READY = "database=ok kafka=ok"  # its status line once its server answers
KEEP = bool(os.environ.get("BENCH_KEEP"))  # keep the copy (its var/log/) to look into a run


def say(message: str) -> None:
    print(message, flush=True)


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class QueueDepth:
    """Samples the file transport's folder: messages waiting, per queue."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.max_by_queue: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            depth: Counter[str] = Counter()
            try:
                for name in os.listdir(self.folder):
                    if name.endswith(".msg"):
                        depth[name.rsplit(".", 2)[-2]] += 1
            except OSError:
                pass
            for queue, count in depth.items():
                self.max_by_queue[queue] = max(self.max_by_queue[queue], count)
            self._stop.wait(0.25)

    def __enter__(self) -> QueueDepth:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class DriveRun(TypedDict):
    payments: list[int]
    failures: dict[str, int]
    achieved_rate: float
    settled: bool
    max_queue_depth: dict[str, int]


def drive(stack: LocalStack, *, rate: float, seconds: float) -> DriveRun:
    tokens = [stack.token(name) for name in ("alice", "bob", "carol")]
    with stack.database() as db:
        products = [row[0] for row in db.execute("SELECT id FROM catalog_product ORDER BY id")]
    payments: list[int] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def order_and_pay(n: int) -> None:
        token = tokens[n % len(tokens)]
        status, order = stack.api(
            "POST", "/api/orders/", {"lines": [{"product_id": products[n % len(products)], "quantity": 1}]}, token=token
        )
        if status != 201:
            with lock:
                failures[f"order {status}"] += 1
            return
        status, payment = stack.api(
            "POST", "/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, token=token
        )
        with lock:
            if status in (200, 201, 202):
                payments.append(payment["id"])
            else:
                failures[f"pay {status}"] += 1

    total = int(rate * seconds)
    started = time.monotonic()
    with (
        QueueDepth(stack.project_dir / "var" / "celery" / "queue") as depth,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):
        for n in range(total):
            # A fixed schedule, not a closed loop: a slow stack does not slow the arrivals.
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            pool.submit(order_and_pay, n)
        pool.shutdown(wait=True)
        achieved = total / (time.monotonic() - started)
        settled = _wait_settled(stack, payments)
    return {
        "payments": payments,
        "failures": dict(failures),
        "achieved_rate": achieved,
        "settled": settled,
        "max_queue_depth": dict(depth.max_by_queue),
    }


def _rows(stack: LocalStack, payment_ids: list[int]) -> list[tuple[Any, ...]]:
    marks = ",".join("?" * len(payment_ids))
    with stack.database() as db:
        return db.execute(
            f"SELECT p.status, p.created_at, p.finished_at, o.status, o.confirmed_at, o.cancelled_at "
            f"FROM payments_payment p JOIN orders_order o ON o.id = p.order_id WHERE p.id IN ({marks})",
            payment_ids,
        ).fetchall()


def _wait_settled(stack: LocalStack, payment_ids: list[int]) -> bool:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline and not stack.exited():
        if payment_ids and all(row[3] != "PENDING_PAYMENT" for row in _rows(stack, payment_ids)):
            return True
        time.sleep(0.5)
    return False


def _checkout_at(ref: str, directory: Path) -> Path:
    archive = subprocess.run(["git", "archive", ref], cwd=PROJECT_DIR, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    return directory


def measure(label: str, *, rate: float, seconds: float, ref: str | None = None, **env: str) -> dict[str, object]:
    directory = tempfile.mkdtemp(prefix=f"bench-payment-{label}-")
    try:
        checkout = _checkout_at(ref, Path(directory)) if ref else project_copy(Path(directory))
        # The baseline's status line reads "database=ok kafka=ok celery_broker=ok" (no cache).
        stack = LocalStack(checkout, port=None, **({"ready": BASELINE_READY} if ref else {}), **env)
        say(f"== {label}: make run in {directory} (port {stack.port}), {rate:g} orders/s for {seconds:g} s")
        stack.start()
        try:
            time.sleep(3)  # the first status line is printed before the relay's first drain
            run = drive(stack, rate=rate, seconds=seconds)
            rows = _rows(stack, run["payments"])
        finally:
            died = stack.exited()
            stack.stop()
            restarts = stack.output().count(" restarting ")
    finally:
        if not KEEP:
            shutil.rmtree(directory, ignore_errors=True)
    confirm_s, reaction_s = [], []
    for payment_status, created, finished, order_status, confirmed, _ in rows:
        if payment_status == "COMPLETED" and order_status == "CONFIRMED" and confirmed:
            confirmed_at = datetime.fromisoformat(confirmed)
            confirm_s.append((confirmed_at - datetime.fromisoformat(created)).total_seconds())
            reaction_s.append((confirmed_at - datetime.fromisoformat(finished)).total_seconds())
    figures: dict[str, object] = {
        "orders_paid": len(run["payments"]),
        "confirmed": len(confirm_s),
        "achieved_orders_per_s": round(run["achieved_rate"], 2),
        "all_settled": run["settled"],
        "p50_s": _round(percentile(confirm_s, 0.50)),
        "p95_s": _round(percentile(confirm_s, 0.95)),
        "p99_s": _round(percentile(confirm_s, 0.99)),
        "max_s": _round(max(confirm_s, default=None)),
        "reaction_p99_s": _round(percentile(reaction_s, 0.99)),
        "max_queue_depth": run["max_queue_depth"],
        "request_failures": run["failures"],
        "stack_died": died,
        "component_restarts": restarts,
    }
    say(
        f"{label}: {figures['confirmed']} of {figures['orders_paid']} paid orders confirmed; "
        f"payment -> confirmed p50 {figures['p50_s']} s, p95 {figures['p95_s']} s, "
        f"p99 {figures['p99_s']} s, max {figures['max_s']} s; reaction (gateway answer -> "
        f"confirmed) p99 {figures['reaction_p99_s']} s; deepest file queue {figures['max_queue_depth']}; "
        f"all settled: {figures['all_settled']}; request failures {figures['request_failures']}; "
        f"stack died: {died}; component restarts: {restarts}"
    )
    return figures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 s instead of 60")
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--no-baseline", action="store_true")
    options = parser.parse_args()
    seconds = options.seconds or (20.0 if options.quick else 60.0)
    result = {"rate": options.rate, "seconds": seconds}
    result["supervised"] = measure("make-run", rate=options.rate, seconds=seconds)
    if not options.no_baseline:
        result["baseline"] = measure("baseline-before-issue-17", rate=options.rate, seconds=seconds, ref=BASELINE_REF)
        base_p99, p99 = result["baseline"]["p99_s"], result["supervised"]["p99_s"]
        if base_p99 and p99:
            result["p99_ratio_vs_baseline"] = round(base_p99 / p99, 1)
    p99 = result["supervised"]["p99_s"]
    result["target_p99_s"] = 2.0
    result["target_met"] = p99 is not None and p99 <= 2.0 and result["supervised"]["all_settled"]
    say(f"target p99 <= 2 s: {'met' if result['target_met'] else 'MISSED'} (p99 {p99} s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
