"""Drive realistic traffic through the HTTP API, wait for the pipeline to drain, and check it.

Browse, view, like and unlike, order with and without coupons, pay (the simulated gateway fails
PAYMENT_SIM_FAILURE_RATE of the payments, in the worker). At the end: a report of actions and
events, a consistency check of the back office against the source tables (exit 1 on any
difference), and commit-to-projection latency percentiles (occurred_at to the inbox's handled
time).
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection
from django.utils import timezone
from rest_framework.authtoken.models import Token

from backoffice.models import DeadLetter, InboxEntry
from catalog.models import Product
from commerce.consistency import consistency_differences
from orders.models import Coupon, Order
from outbox.models import OutboxEvent
from payments.models import Payment


@dataclass
class Tally:
    actions: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, action: str, status: int, detail: str = "") -> None:
        with self.lock:
            self.actions[action] += 1
            self.statuses[status] += 1
            if status >= 500 or status == 0:
                self.server_errors.append(f"{action}: {status} {detail[:200]}")


class ApiClient:
    def __init__(self, base_url: str, token: str) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.token = token
        self.connection: http.client.HTTPConnection | None = None

    # 429 answers seen (THROTTLE_USER is lower than this run's rate per shopper); the report
    # shows them, and the call waits for Retry-After and tries again, so the run stays complete.
    throttled = 0
    _throttled_lock = threading.Lock()

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        """The status and the JSON answer (its text when not JSON)."""
        status, data, retry_after = self._call_once(method, path, body)
        for _ in range(4):  # retries after a 429
            if status != 429:
                break
            with ApiClient._throttled_lock:
                ApiClient.throttled += 1
            time.sleep(min(retry_after, 60.0))
            status, data, retry_after = self._call_once(method, path, body)
        return status, data

    def _call_once(self, method: str, path: str, body: dict | None) -> tuple[int, Any, float]:
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.connection.request(method, path, body=payload, headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
                retry_after = float(response.getheader("Retry-After") or 1)
                try:
                    return response.status, json.loads(raw) if raw else None, retry_after
                except ValueError:
                    return response.status, raw.decode(errors="replace"), retry_after
            except (OSError, http.client.HTTPException):
                self.connection = None
                if attempt:
                    return 0, "connection failed", 0.0
        return 0, "connection failed", 0.0


class Shopper:
    def __init__(
        self, client: ApiClient, coupons: list[str], products: list[int], rng: random.Random, tally: Tally
    ) -> None:
        self.client, self.coupons, self.products, self.rng, self.tally = client, coupons, products, rng, tally
        self.unpaid_orders: list[int] = []

    def act(self) -> None:
        roll = self.rng.random()
        product = self.rng.choice(self.products)
        if roll < 0.12:
            status, _ = self.client.call("GET", "/api/products/")
            self.tally.record("browse", status)
        elif roll < 0.35:
            status, _ = self.client.call("GET", f"/api/products/{product}/")
            self.tally.record("view", status)
        elif roll < 0.52:
            status, _ = self.client.call("PUT", f"/api/products/{product}/like/")
            self.tally.record("like", status)
        elif roll < 0.62:
            status, _ = self.client.call("DELETE", f"/api/products/{product}/like/")
            self.tally.record("unlike", status)
        elif roll < 0.82 or not self.unpaid_orders:
            body: dict = {
                "lines": [
                    {"product_id": p, "quantity": self.rng.randint(1, 2)}
                    for p in self.rng.sample(self.products, self.rng.randint(1, 3))
                ]
            }
            if self.coupons and self.rng.random() < 0.2:
                body["coupon_code"] = self.coupons.pop()
            status, data = self.client.call("POST", "/api/orders/", body)
            self.tally.record("order" if "coupon_code" not in body else "order_with_coupon", status, str(data))
            if status == 201:
                self.unpaid_orders.append(data["id"])
        else:
            order_id = self.unpaid_orders.pop(0)
            if self.rng.random() < 0.1:
                status, data = self.client.call("POST", f"/api/orders/{order_id}/cancel/", {})
                self.tally.record("cancel", status, str(data))
                return
            card = self.rng.choice(["VISA", "MASTERCARD", "AMEX"])
            status, data = self.client.call("POST", "/api/payments/", {"order_id": order_id, "card_type": card})
            self.tally.record("pay", status, str(data))


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--actions", type=int, default=500)
        parser.add_argument("--users", type=int, default=4, help="concurrent shoppers")
        parser.add_argument("--rate", type=float, default=0.0, help="actions per second; 0: as fast as possible")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--drain-timeout", type=float, default=120.0)
        parser.add_argument("--group", default=None, help="the back office's consumer group")
        parser.add_argument("--json", action="store_true", help="last line: the report as JSON")
        parser.add_argument(
            "--tolerate-server-errors",
            action="store_true",
            help="fault campaigns: 5xx while a dependency is down do not fail the run",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started_at = timezone.now()
        tokens, coupons = self._shoppers(options["users"])
        products = list(Product.objects.values_list("id", flat=True)[:30])
        if not products:
            raise CommandError("no products: run `manage.py seed_demo` first")
        tally = Tally()
        rng = random.Random(options["seed"])
        shoppers = [
            Shopper(ApiClient(options["base_url"], token), coupons[n], products, random.Random(rng.random()), tally)
            for n, token in enumerate(tokens)
        ]
        self._drive(shoppers, options["actions"], options["rate"], tally)
        drained = self._wait_for_drain(
            started_at, options["drain_timeout"], options["group"] or settings.BACKOFFICE_GROUP_ID
        )
        report = self._report(started_at, tally, drained, options["group"] or settings.BACKOFFICE_GROUP_ID)
        if options["json"]:
            self.stdout.write(json.dumps(report, default=str))
        server_errors_fail = tally.server_errors and not options["tolerate_server_errors"]
        if report["differences"] or server_errors_fail or not drained:
            sys.exit(1)

    def _shoppers(self, count: int) -> tuple[list[str], list[list[str]]]:
        user_model = get_user_model()
        tokens, coupons = [], []
        for n in range(count):
            user, _ = user_model.objects.get_or_create(username=f"sim-shopper-{n}")
            tokens.append(Token.objects.get_or_create(user=user)[0].key)
            codes = []
            for k in range(5):
                coupon, _ = Coupon.objects.get_or_create(
                    code=f"SIM-{n}-{k}-{int(time.time())}",
                    defaults={
                        "kind": Coupon.Kind.PERCENT,
                        "value": 10,
                        "owner": user,
                        "expires_at": timezone.now() + timedelta(days=1),
                    },
                )
                codes.append(coupon.code)
            coupons.append(codes)
        return tokens, coupons

    def _drive(self, shoppers: list[Shopper], actions: int, rate: float, tally: Tally) -> None:
        counter = iter(range(actions))
        counter_lock = threading.Lock()
        started = time.monotonic()

        def work(shopper: Shopper) -> None:
            while True:
                with counter_lock:
                    index = next(counter, None)
                if index is None:
                    return
                if rate > 0:
                    delay = started + index / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                shopper.act()

        threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in shoppers]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            done = sum(tally.actions.values())
            width = 30
            filled = int(width * done / max(actions, 1))
            elapsed = time.monotonic() - started
            self.stdout.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{actions} actions, "
                f"{done / elapsed if elapsed else 0:.0f}/s",
                ending="",
            )
            self.stdout.flush()
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        self.stdout.write(f"\r[{'#' * 30}] {actions}/{actions} actions in {elapsed:.1f} s ({actions / elapsed:.0f}/s)")

    def _wait_for_drain(self, since: datetime, timeout_s: float, group: str) -> bool:
        self.stdout.write(
            "waiting for the pipeline to drain (payments answered, outbox published, back office caught up)..."
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                drained = self._drained(since, group)
            except DatabaseError:
                # The database restarted under a fault campaign: reconnect and look again.
                connection.close()
                time.sleep(1)
                continue
            if drained:
                return True
            time.sleep(1)
        self.stdout.write("")
        return False

    def _drained(self, since: datetime, group: str) -> bool:
        pending_payments = Payment.objects.filter(status=Payment.Status.PENDING).count()
        orders_behind = Order.objects.filter(
            status=Order.Status.PENDING_PAYMENT, payments__status__in=[Payment.Status.COMPLETED, Payment.Status.FAILED]
        ).count()
        pending_events = OutboxEvent.objects.exclude(status=OutboxEvent.Status.PUBLISHED).count()
        published = OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED, created_at__gte=since)
        consumed = InboxEntry.objects.filter(consumer_group=group, event_id__in=published.values("event_id"))
        behind = published.count() - consumed.count()
        if not (pending_payments or orders_behind or pending_events or behind) and not consistency_differences():
            return True
        self.stdout.write(
            f"\r  payments pending {pending_payments}, orders behind {orders_behind}, "
            f"outbox unpublished {pending_events}, not yet consumed {behind}   ",
            ending="",
        )
        self.stdout.flush()
        return False

    def _report(self, since: datetime, tally: Tally, drained: bool, group: str) -> dict:
        events = OutboxEvent.objects.filter(created_at__gte=since)
        handled = InboxEntry.objects.filter(consumer_group=group, event_id__in=events.values("event_id"))
        latencies = [
            (entry.handled_at - entry.occurred_at).total_seconds() * 1000
            for entry in handled.only("handled_at", "occurred_at")
        ]
        differences = [str(d) for d in consistency_differences()]
        latency_ms = {
            "p50": percentile(latencies, 0.50),
            "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99),
        }
        report = {
            "actions": sum(tally.actions.values()),
            "actions_by_kind": dict(tally.actions),
            "http_statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
            "throttled_429_retried": ApiClient.throttled,
            "server_errors": len(tally.server_errors),
            "events_recorded": events.count(),
            "events_published": events.filter(status=OutboxEvent.Status.PUBLISHED).count(),
            "events_consumed": handled.count(),
            "dead_letters": DeadLetter.objects.filter(created_at__gte=since).count(),
            "outbox_dead": events.filter(status=OutboxEvent.Status.DEAD).count(),
            "drained": drained,
            "differences": differences,
            "latency_ms": latency_ms,
        }
        self.stdout.write("")
        self.stdout.write("== simulation report ==")
        for kind, count in sorted(tally.actions.items()):
            self.stdout.write(f"  {kind:<18} {count}")
        self.stdout.write(f"  HTTP statuses      {report['http_statuses']}")
        for key in (
            "throttled_429_retried",
            "events_recorded",
            "events_published",
            "events_consumed",
            "dead_letters",
            "outbox_dead",
        ):
            self.stdout.write(f"  {key:<18} {report[key]}")
        lat = latency_ms
        if latencies:
            self.stdout.write(
                f"  commit-to-projection latency: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, "
                f"p99 {lat['p99']:.0f} ms ({len(latencies)} events)"
            )
        for error in tally.server_errors[:10]:
            self.stdout.write(f"  SERVER ERROR {error}")
        if differences:
            self.stdout.write(f"  consistency check FAILED: {len(differences)} difference(s)")
            for difference in differences[:20]:
                self.stdout.write(f"    {difference}")
        elif drained:
            self.stdout.write("  consistency check passed: the projections equal the source tables")
        else:
            self.stdout.write("  the pipeline did not drain in time")
        return report
