"""The cost of recording: order placement through the service layer with and without the
outbox receiver connected, in the same run (alternating rounds to cancel noise).
Target: the outbox costs <= 15%.

    .venv/bin/python bench/record.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal

from common import django_setup, finish, say


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    rounds, per_round = (4, 150) if options.quick else (6, 500)
    django_setup()

    from django.contrib.auth import get_user_model

    from catalog import signals as catalog_signals
    from catalog.services import product_create
    from orders import signals as order_signals
    from orders.services import OrderLineRequest, order_place
    from outbox.models import OutboxEvent
    from outbox.receivers import outbox_connect, outbox_disconnect
    from payments import signals as payment_signals

    all_signals = (*catalog_signals.EVENT_SIGNALS, *order_signals.EVENT_SIGNALS, *payment_signals.EVENT_SIGNALS)
    user, _ = get_user_model().objects.get_or_create(username="bench-shopper")
    products = [product_create(name=f"bench {n}", price=Decimal("10.00"), stock=10_000_000) for n in range(20)]

    def place(count: int) -> float:
        started = time.perf_counter()
        for n in range(count):
            first, second = products[n % 20], products[(n + 7) % 20]
            order_place(user=user, lines=[OrderLineRequest(product_id=first.id, quantity=1),
                                          OrderLineRequest(product_id=second.id, quantity=2)])
        return count / (time.perf_counter() - started)

    place(50)  # warm up
    with_rates, without_rates = [], []
    try:
        for round_number in range(rounds):
            outbox_disconnect(all_signals)
            without_rates.append(place(per_round))
            outbox_connect(all_signals)
            before = OutboxEvent.objects.count()
            with_rates.append(place(per_round))
            recorded = OutboxEvent.objects.count() - before
            assert recorded == per_round * 3, recorded  # OrderCreated + 2 StockChanged per order
            say(f"round {round_number + 1}: without outbox {without_rates[-1]:.0f} orders/s, "
                f"with outbox {with_rates[-1]:.0f} orders/s")
    finally:
        outbox_connect(all_signals)
        OutboxEvent.objects.all().delete()
    with_ops = sorted(with_rates)[len(with_rates) // 2]
    without_ops = sorted(without_rates)[len(without_rates) // 2]
    overhead = 1 - with_ops / without_ops
    say(f"median: with outbox {with_ops:.0f} orders/s, without {without_ops:.0f} orders/s, "
        f"overhead {overhead:.1%} (target <= 15%: {'PASS' if overhead <= 0.15 else 'FAIL'})")
    finish({"with_outbox_ops": round(with_ops, 1), "without_outbox_ops": round(without_ops, 1),
            "overhead": round(overhead, 3), "orders_per_round": per_round, "rounds": rounds})


if __name__ == "__main__":
    main()
