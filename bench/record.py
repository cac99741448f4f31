"""The cost of recording: order placement through `orders.services.order_place` with and
without the outbox receiver connected, in the same run.

Rounds alternate (ABBA: without/with, then with/without, ...) so drift in the machine or the
database cancels out; each figure is the median of its rounds. Products get plenty of stock and
several users place the orders. The wake-up is on, as in production on PostgreSQL: every
recording statement NOTIFYs `outbox_wakeup` (OUTBOX_WAKEUP=notify, outbox/recording.py) and a
session LISTENs and reads the notifications as the relay loop does (no relay drains here, so
the figure is the recording's cost alone; no Celery kick: with NOTIFY there is none). Target: the
outbox costs <= 10% of the throughput.

    .venv/bin/python bench/record.py [--quick] [--rounds N] [--per-round N]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from decimal import Decimal

from common import django_setup, finish, say

PRODUCTS = 20
USERS = 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--per-round", type=int, default=None)
    options = parser.parse_args()
    rounds = options.rounds or (4 if options.quick else 8)
    per_round = options.per_round or (150 if options.quick else 500)
    django_setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model

    from catalog import signals as catalog_signals
    from catalog.models import Product
    from catalog.services import product_create
    from orders import signals as order_signals
    from orders.models import Order
    from orders.services import OrderLineRequest, order_place
    from outbox.models import OutboxEvent
    from outbox.receivers import outbox_connect, outbox_disconnect
    from outbox.relay.listen import _listen_connect, _take_notifications
    from outbox.wakeup import wakeup_mode
    from payments import signals as payment_signals

    settings.OUTBOX_WAKEUP = "notify"  # production's wake-up on PostgreSQL
    assert wakeup_mode() == "notify"
    listener = _listen_connect("default")
    heard = [0]
    stop_listening = threading.Event()

    def listen() -> None:
        # As the relay loop: the notifications are read as they come (an unread queue would
        # grow in PostgreSQL's notification buffer, which is not production's state).
        while not stop_listening.wait(0.02):
            heard[0] += len(_take_notifications(listener))

    listening = threading.Thread(target=listen, daemon=True)
    listening.start()
    say(
        f"wake-up: OUTBOX_WAKEUP={settings.OUTBOX_WAKEUP} (NOTIFY in the recording statement, "
        "a session LISTENing); tracing off (OTEL_TRACES_EXPORTER default none)"
    )
    all_signals = (*catalog_signals.EVENT_SIGNALS, *order_signals.EVENT_SIGNALS, *payment_signals.EVENT_SIGNALS)

    say(f"setting up {PRODUCTS} products (10,000,000 units each) and {USERS} users ...")
    users = [get_user_model().objects.get_or_create(username=f"bench-shopper-{n}")[0] for n in range(USERS)]
    products = [product_create(name=f"bench {n}", price=Decimal("10.00"), stock=10_000_000) for n in range(PRODUCTS)]
    product_ids = [p.id for p in products]
    placed = 0

    def place(count: int) -> float:
        nonlocal placed
        started = time.perf_counter()
        for n in range(count):
            first, second = products[(placed + n) % PRODUCTS], products[(placed + n + 7) % PRODUCTS]
            order_place(
                user=users[(placed + n) % USERS],
                lines=[
                    OrderLineRequest(product_id=first.id, quantity=1),
                    OrderLineRequest(product_id=second.id, quantity=2),
                ],
            )
        placed += count
        return count / (time.perf_counter() - started)

    def run_round(with_outbox: bool) -> float:
        if with_outbox:
            outbox_connect(all_signals)
            before = OutboxEvent.objects.count()
            rate = place(per_round)
            recorded = OutboxEvent.objects.count() - before
            # OrderCreated + two StockChanged per order: the receiver was really connected.
            assert recorded == per_round * 3, recorded
            return rate
        outbox_disconnect(all_signals)
        before = OutboxEvent.objects.count()
        rate = place(per_round)
        assert OutboxEvent.objects.count() == before, "the outbox recorded while disconnected"
        return rate

    with_rates: list[float] = []
    without_rates: list[float] = []
    try:
        say("warming up (both ways) ...")
        run_round(False)
        run_round(True)
        say(f"{rounds} rounds of {per_round} orders each way, alternating ...")
        for round_number in range(rounds):
            order = (False, True) if round_number % 2 == 0 else (True, False)
            for with_outbox in order:
                (with_rates if with_outbox else without_rates).append(run_round(with_outbox))
            say(
                f"  round {round_number + 1}/{rounds}: without outbox {without_rates[-1]:.0f} orders/s, "
                f"with outbox {with_rates[-1]:.0f} orders/s ({1 - with_rates[-1] / without_rates[-1]:+.1%})"
            )
    finally:
        stop_listening.set()
        listening.join()
        listener.close()
        outbox_connect(all_signals)
        OutboxEvent.objects.all().delete()
        Order.objects.filter(user__in=users).delete()
        Product.objects.filter(id__in=product_ids).delete()

    with_ops = statistics.median(with_rates)
    without_ops = statistics.median(without_rates)
    overhead = 1 - with_ops / without_ops
    say(f"median: with outbox {with_ops:.1f} orders/s, without {without_ops:.1f} orders/s")
    say(
        f"notifications heard: {heard[0]} (one per recording statement of a committed transaction:"
        " the orders and the set-up)"
    )
    say(f"overhead {overhead:.1%} (target <= 10%: {'PASS' if overhead <= 0.10 else 'FAIL'})")
    finish(
        {
            "with_outbox_ops": round(with_ops, 1),
            "without_outbox_ops": round(without_ops, 1),
            "overhead": round(overhead, 3),
            "orders": rounds * per_round * 2,
            "orders_per_round": per_round,
            "rounds": rounds,
            "wakeup": "notify",
            "notifications_heard": heard[0],
        }
    )


if __name__ == "__main__":
    main()
