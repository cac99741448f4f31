from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from payments.models import Payment


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    """Read-only: a payment changes only through the gateway's signed callback."""

    list_display = ["transaction_key", "order", "user", "amount", "card_type", "status", "created_at"]
    list_filter = ["status", "card_type", "created_at"]
    search_fields = ["transaction_key", "order__number", "user__username"]
    readonly_fields = [f.name for f in Payment._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Payment | None = None) -> bool:
        return False
