"""The source tables against the back office's projections: are they the same facts?

Used by `simulate_traffic` (so `make demo`) and the fault campaign (`make chaos`) at the end of a
run, once the pipeline has drained: every difference is an event lost, an effect applied twice
(or not yet applied), or money that nothing accounts for. Three parts:

- products: likes, views, sales and stock of every product against `ProductMetrics`;
- orders: every order's state, number, user and totals against its `OrderLedger` row (and no
  ledger row without its order);
- payments: every captured payment has an order in a state that accounts for it (confirmed, or
  confirmed and later cancelled by its user), or is refund-due; at most one captured payment per
  order, of the order's amount; and the ledger's refund due of each order is the sum of its
  refund-due payments.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, DecimalField, F, Sum

from backoffice.models import OrderLedger, ProductMetrics
from catalog.models import Like, Product, ProductView
from orders.models import Order, OrderLine
from payments.models import Payment

# The payments app marks a captured payment whose order cannot take it (PaymentRefundRequired)
# with this status; looked up by name, so the check runs before and after that status exists.
REFUND_DUE = str(getattr(Payment.Status, "REFUND_DUE", "REFUND_DUE"))
ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Difference:
    subject: str  # "product 5", "order 12", "payment 7"
    field: str
    source: object
    projection: object

    def __str__(self) -> str:
        return f"{self.subject} {self.field}: source {self.source}, projection {self.projection}"


def consistency_differences() -> list[Difference]:
    return products_differences() + orders_differences() + payments_differences()


def products_differences() -> list[Difference]:
    likes = dict(Like.objects.values("product_id").annotate(n=Count("id")).values_list("product_id", "n"))
    views = dict(ProductView.objects.values("product_id").annotate(n=Count("id")).values_list("product_id", "n"))
    sales = {
        row["product_id"]: (row["units"], row["revenue"])
        for row in OrderLine.objects.filter(order__status=Order.Status.CONFIRMED)
        .values("product_id")
        .annotate(
            units=Sum("quantity"),
            revenue=Sum(F("quantity") * F("unit_price"), output_field=DecimalField(max_digits=14, decimal_places=2)),
        )
    }
    metrics = {m.product_id: m for m in ProductMetrics.objects.all()}
    differences = []
    for product_id, stock in Product.objects.values_list("id", "stock"):
        m = metrics.get(str(product_id))
        quantity, amount = sales.get(product_id, (0, ZERO))
        expected = {
            "like_count": likes.get(product_id, 0),
            "view_count": views.get(product_id, 0),
            "sales_quantity": quantity or 0,
            "sales_amount": Decimal(amount or 0),
            "stock": stock,
        }
        for field, source in expected.items():
            projection = getattr(m, field) if m else None
            if projection != source:
                differences.append(Difference(f"product {product_id}", field, source, projection))
    return differences


_LEDGER_FIELDS = ("status", "order_number", "user_id", "original_total", "discount", "final_total")


def orders_differences() -> list[Difference]:
    ledger = {row.order_id: row for row in OrderLedger.objects.all()}
    differences = []
    for order in Order.objects.values(
        "id", "status", "number", "user_id", "original_total", "discount", "final_total"
    ).iterator():
        row = ledger.pop(str(order["id"]), None)
        subject = f"order {order['id']}"
        if row is None:
            differences.append(Difference(subject, "ledger row", order["status"], None))
            continue
        source = {
            "status": order["status"],
            "order_number": order["number"],
            "user_id": str(order["user_id"]),
            "original_total": order["original_total"],
            "discount": order["discount"],
            "final_total": order["final_total"],
        }
        differences.extend(
            Difference(subject, field, source[field], getattr(row, field))
            for field in _LEDGER_FIELDS
            if getattr(row, field) != source[field]
        )
    differences.extend(
        Difference(f"order {order_id}", "ledger row without an order", None, row.status)
        for order_id, row in sorted(ledger.items())
    )
    return differences


def payments_differences() -> list[Difference]:
    differences = []
    captured_per_order: dict[int, int] = defaultdict(int)
    refund_due: dict[str, Decimal] = defaultdict(lambda: ZERO)
    payments = Payment.objects.filter(status__in=[Payment.Status.COMPLETED, REFUND_DUE]).values(
        "id", "status", "amount", "order_id", "order__status", "order__confirmed_at", "order__final_total"
    )
    for payment in payments.iterator():
        subject = f"payment {payment['id']}"
        if payment["status"] == REFUND_DUE:
            refund_due[str(payment["order_id"])] += payment["amount"]
            continue
        captured_per_order[payment["order_id"]] += 1
        order_status = payment["order__status"]
        accounted = order_status == Order.Status.CONFIRMED or (
            order_status == Order.Status.CANCELLED and payment["order__confirmed_at"] is not None
        )
        if not accounted:
            differences.append(
                Difference(
                    subject,
                    "captured, order does not account for it",
                    f"order {payment['order_id']} {order_status}",
                    None,
                )
            )
        if payment["amount"] != payment["order__final_total"]:
            differences.append(Difference(subject, "amount", payment["order__final_total"], payment["amount"]))
    for order_id, count in sorted(captured_per_order.items()):
        if count > 1:
            differences.append(Difference(f"order {order_id}", "captured payments", 1, count))
    ledger_refunds = dict(OrderLedger.objects.exclude(refund_due=ZERO).values_list("order_id", "refund_due"))
    for order_key in sorted(set(refund_due) | set(ledger_refunds)):
        source, projection = refund_due.get(order_key, ZERO), ledger_refunds.get(order_key, ZERO)
        if projection != source:
            differences.append(Difference(f"order {order_key}", "refund_due", source, projection))
    return differences
