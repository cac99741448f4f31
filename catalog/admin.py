from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from catalog.models import Like, Product, ProductView
from catalog.services import STOCK_MAX, product_create, product_restock, product_update
from commerce.admin import BoundedLookupsAdmin, ReadOnlyAdmin
from commerce.errors import DomainValidationError


class ProductCreateForm(forms.ModelForm):
    # SQLite's columns have no range for Django to check: the bound the services hold.
    stock = forms.IntegerField(min_value=0, max_value=STOCK_MAX)

    class Meta:
        model = Product
        fields = ["name", "price", "stock"]


@admin.register(Product)
class ProductAdmin(BoundedLookupsAdmin[Product]):
    """Stock changes only through the services (they emit StockChanged): created with its initial
    stock, then restocked with the action; name and price are plain edits."""

    list_display = ["id", "name", "price", "stock", "stock_version", "updated_at"]
    search_fields = ["name", "=id"]
    list_filter = ["updated_at"]
    actions = ["restock_ten"]

    def get_form(
        self, request: HttpRequest, obj: Product | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Product]]:
        if obj is None:
            kwargs["form"] = ProductCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # No event says a product is gone: the back office would keep its metrics (and stock)
        # for good, and its orders' lines name it.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Product | None = None) -> list[str]:
        return ["stock", "stock_version", "created_at", "updated_at"] if obj else []

    def save_model(self, request: HttpRequest, obj: Product, form: forms.ModelForm[Product], change: bool) -> None:
        if change:
            product_update(product_id=obj.pk, name=obj.name, price=obj.price)
        else:
            created = product_create(name=obj.name, price=obj.price, stock=obj.stock)
            obj.pk = created.pk

    @admin.action(description="Restock 10 units (emits StockChanged)", permissions=["change"])
    def restock_ten(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        restocked = 0
        for product in queryset:
            try:
                product_restock(product_id=product.id, quantity=10)
            except DomainValidationError as exc:
                self.message_user(request, f"Product {product.id}: restock refused: {exc}", messages.ERROR)
            else:
                restocked += 1
        if restocked:
            self.message_user(request, f"Restocked {restocked} product(s).", messages.SUCCESS)


@admin.register(Like)
class LikeAdmin(ReadOnlyAdmin):
    """Likes change through the API only (each change is a LikeChanged event)."""

    list_display = ["id", "user", "product", "created_at"]
    search_fields = ["=product__id", "user__username"]


@admin.register(ProductView)
class ProductViewAdmin(ReadOnlyAdmin):
    list_display = ["id", "product", "user", "viewed_at"]
    list_filter = ["viewed_at"]
