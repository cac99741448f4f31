from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import Product


def product_list(*, name: str | None = None) -> QuerySet[Product]:
    products = Product.objects.all().order_by("id")
    if name:
        products = products.filter(name__icontains=name)
    return products


def product_get(*, product_id: int) -> Product:
    return Product.objects.get(id=product_id)
