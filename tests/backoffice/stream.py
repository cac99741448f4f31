"""Envelope records as the relay publishes them (docs/EVENTS.md), and the projections they imply.

The back office is tested against the contract alone, so these records are built here, not by
the domain apps.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from kafka import KafkaProducer


@dataclass(frozen=True)
class Record:
    topic_stream: str  # "catalog-events" | "order-events"
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def event_id(self) -> str:
        return dict(self.headers)["event_id"].decode()


def record(
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    payload: dict,
    *,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
    version: int = 1,
    aggregate_version: int | None = None,
) -> Record:
    occurred = (occurred_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    payload = {**payload, "occurred_at": occurred}
    headers = [
        ("event_id", (event_id or str(uuid.uuid4())).encode()),
        ("event_type", event_type.encode()),
        ("event_version", str(version).encode()),
        ("aggregate_type", aggregate_type.encode()),
        ("aggregate_id", aggregate_id.encode()),
        ("occurred_at", occurred.encode()),
        ("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()),
    ]
    if aggregate_version is not None:
        headers.append(("aggregate_version", str(aggregate_version).encode()))
    stream = "catalog-events" if aggregate_type == "product" else "order-events"
    return Record(stream, aggregate_id.encode(), json.dumps(payload).encode(), headers)


def like(product_id: str, liked: bool, user_id: str = "1") -> Record:
    return record("LikeChanged", "product", product_id, {"product_id": product_id, "user_id": user_id, "liked": liked})


def view(product_id: str) -> Record:
    return record("ProductViewed", "product", product_id, {"product_id": product_id, "user_id": None})


def stock(product_id: str, quantity: int, version: int) -> Record:
    return record(
        "StockChanged",
        "product",
        product_id,
        {
            "product_id": product_id,
            "quantity": quantity,
            "version": version,
            "delta": -1,
            "reason": "reserve",
            "order_id": None,
        },
    )


# An order's events in its lifecycle, as the domain numbers them under the order's lock.
ORDER_VERSIONS = {"OrderCreated": 1, "OrderConfirmed": 2, "OrderCancelled": 3}

# The event_version the domain produces of each order type (orders/events.py); 1 for the others.
LATEST_VERSIONS = {"OrderConfirmed": 2}


def order_event(
    event_type: str,
    order_id: str,
    lines: list[tuple[str, int, str]],
    *,
    occurred_at: datetime | None = None,
    aggregate_version: int | None = None,
    version: int | None = None,
    **extra: object,
) -> Record:
    """An order event as the domain produces it now: OrderConfirmed in v2 (each line's subtotal,
    the shop's currency); `version=1` gives the v1 record still on the topics (no subtotal, no
    currency), for the tests of the upcaster."""
    version = version or LATEST_VERSIONS.get(event_type, 1)
    lines_payload: list[dict[str, object]] = [
        {"product_id": p, "quantity": q, "unit_price": price} for p, q, price in lines
    ]
    total = sum((Decimal(price) * q for _, q, price in lines), Decimal("0.00"))
    if event_type == "OrderConfirmed" and version >= 2:
        for line, (_, q, price) in zip(lines_payload, lines, strict=True):
            line["subtotal"] = str((Decimal(price) * q).quantize(Decimal("0.01")))
        extra = {"currency": settings.SHOP_CURRENCY, **extra}
    payload = {
        "order_id": order_id,
        "order_number": f"ORD-{order_id}",
        "user_id": "7",
        "original_total": str(total),
        "discount": "0.00",
        "final_total": str(total),
        "lines": lines_payload,
        **extra,
    }
    return record(
        event_type,
        "order",
        order_id,
        payload,
        occurred_at=occurred_at,
        version=version,
        aggregate_version=aggregate_version or ORDER_VERSIONS[event_type],
    )


def refund_required(
    order_id: str, amount: str, *, payment_id: str = "501", aggregate_version: int = 4, reason: str = "order_cancelled"
) -> Record:
    return record(
        "PaymentRefundRequired",
        "order",
        order_id,
        {
            "payment_id": payment_id,
            "order_id": order_id,
            "user_id": "7",
            "amount": amount,
            "card_type": "VISA",
            "reason": reason,
        },
        aggregate_version=aggregate_version,
    )


@dataclass(frozen=True)
class Consumed:
    """A record as the consumer polls it (the fields of kafka-python's ConsumerRecord it reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def consumed(records: list[Record], *, partition: int = 0, first_offset: int = 0) -> list[Consumed]:
    """The records as one partition delivers them, in order."""
    return [
        Consumed(r.topic_stream, partition, first_offset + n, r.key, r.value, r.headers) for n, r in enumerate(records)
    ]


@dataclass
class Expected:
    likes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    views: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sales_quantity: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sales_amount: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: Decimal("0.00")))
    stock: dict[str, int] = field(default_factory=dict)
    ledger: dict[str, str] = field(default_factory=dict)


def stream_make(*, products: int = 12, events: int = 600, seed: int = 7) -> tuple[list[Record], Expected]:
    """A realistic mixed stream and the projections it must produce, whatever the delivery."""
    rng = random.Random(seed)
    expected = Expected()
    records: list[Record] = []
    liked: dict[tuple[str, str], bool] = {}
    stock_version: dict[str, int] = defaultdict(int)
    order_number = 0
    base = datetime.now(UTC)
    while len(records) < events:
        product = str(rng.randint(1, products))
        kind = rng.random()
        if kind < 0.3:
            user = str(rng.randint(1, 5))
            now_liked = not liked.get((product, user), False)
            liked[(product, user)] = now_liked
            records.append(like(product, now_liked, user))
            expected.likes[product] += 1 if now_liked else -1
        elif kind < 0.6:
            records.append(view(product))
            expected.views[product] += 1
        elif kind < 0.8:
            stock_version[product] += 1
            quantity = rng.randint(0, 50)
            records.append(stock(product, quantity, stock_version[product]))
            expected.stock[product] = quantity
        else:
            order_number += 1
            order_id = str(order_number)
            lines = [(product, rng.randint(1, 3), "9.99")]
            confirmed_at = base + timedelta(seconds=order_number)
            records.append(order_event("OrderConfirmed", order_id, lines, occurred_at=confirmed_at))
            expected.sales_quantity[product] += lines[0][1]
            expected.sales_amount[product] += Decimal("9.99") * lines[0][1]
            expected.ledger[order_id] = "CONFIRMED"
            if rng.random() < 0.3:
                records.append(
                    order_event(
                        "OrderCancelled",
                        order_id,
                        lines,
                        reason="changed mind",
                        was_confirmed=True,
                        occurred_at=confirmed_at + timedelta(milliseconds=5),
                    )
                )
                expected.sales_quantity[product] -= lines[0][1]
                expected.sales_amount[product] -= Decimal("9.99") * lines[0][1]
                expected.ledger[order_id] = "CANCELLED"
    return records, expected


def produce(records: list[Record], topics: dict[str, str], *, partition: int | None = None) -> None:
    """Send the records in their order (to one partition when given, else by key)."""
    producer = KafkaProducer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        **settings.KAFKA_SECURITY,
    )
    for item in records:
        producer.send(
            topics[item.topic_stream], key=item.key, value=item.value, headers=item.headers, partition=partition
        )
    producer.flush()
    producer.close()


def projections_differences(expected: Expected) -> list[str]:
    """Every way the projections differ from what the stream implies (empty when exact)."""
    from backoffice.models import OrderLedger, ProductMetrics

    differences = []
    metrics = {m.product_id: m for m in ProductMetrics.objects.all()}
    products = set(expected.likes) | set(expected.views) | set(expected.sales_quantity) | set(expected.stock)
    for product in sorted(products):
        m = metrics.get(product)
        got = (m.like_count, m.view_count, m.sales_quantity, m.sales_amount, m.stock) if m else None
        want = (
            expected.likes.get(product, 0),
            expected.views.get(product, 0),
            expected.sales_quantity.get(product, 0),
            expected.sales_amount.get(product, Decimal("0.00")),
            expected.stock.get(product),
        )
        if got != want:
            differences.append(f"product {product}: got {got}, want {want}")
    ledger = dict(OrderLedger.objects.values_list("order_id", "status"))
    if ledger != expected.ledger:
        differences.append(f"ledger differs on {sorted(set(ledger.items()) ^ set(expected.ledger.items()))[:5]}")
    return differences
