"""The source tables against the back office's projections: are they the same facts?

Used by `simulate_traffic` and the fault campaign at the end of a run, once the pipeline has
drained: every difference is an event lost or an effect applied twice (or not yet applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, DecimalField, F, Sum

from backoffice.models import ProductMetrics
from catalog.models import Like, Product, ProductView
from orders.models import Order, OrderLine


@dataclass(frozen=True)
class Difference:
    product_id: int
    field: str
    source: object
    projection: object

    def __str__(self) -> str:
        return f"product {self.product_id} {self.field}: source {self.source}, projection {self.projection}"


def consistency_differences() -> list[Difference]:
    likes = dict(Like.objects.values("product_id").annotate(n=Count("id")).values_list("product_id", "n"))
    views = dict(ProductView.objects.values("product_id").annotate(n=Count("id")).values_list("product_id", "n"))
    sales = {row["product_id"]: (row["units"], row["amount"]) for row in
             OrderLine.objects.filter(order__status=Order.Status.CONFIRMED).values("product_id")
             .annotate(units=Sum("quantity"),
                       amount=Sum(F("quantity") * F("unit_price"),
                                  output_field=DecimalField(max_digits=14, decimal_places=2)))}
    metrics = {m.product_id: m for m in ProductMetrics.objects.all()}
    differences = []
    for product_id, stock in Product.objects.values_list("id", "stock"):
        m = metrics.get(str(product_id))
        quantity, amount = sales.get(product_id, (0, Decimal("0.00")))
        expected = {"like_count": likes.get(product_id, 0), "view_count": views.get(product_id, 0),
                    "sales_quantity": quantity or 0, "sales_amount": Decimal(amount or 0), "stock": stock}
        for field, source in expected.items():
            projection = getattr(m, field) if m else None
            if projection != source:
                differences.append(Difference(product_id, field, source, projection))
    return differences
