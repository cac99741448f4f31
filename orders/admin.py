from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from commerce.admin import BoundedLookupsAdmin, ReadOnlyAdmin
from commerce.errors import DomainError
from orders.models import Coupon, Order, OrderLine
from orders.services import order_cancel
from payments.models import Payment


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    fields = readonly_fields = ("product", "quantity", "unit_price")
    extra = 0
    can_delete = False


class PaymentInline(admin.TabularInline):
    model = Payment
    fields = readonly_fields = (
        "transaction_key",
        "amount",
        "card_type",
        "status",
        "failure_reason",
        "refund_reason",
        "finished_at",
    )
    extra = 0
    can_delete = False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    """Orders change state only through the services (cancel action), never by editing."""

    list_display = ["number", "user", "status", "original_total", "discount", "final_total", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["number", "user__username", "=id"]
    inlines = [OrderLineInline, PaymentInline]
    actions = ["cancel_orders"]
    readonly_fields = [f.name for f in Order._meta.fields]

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        # The form is read-only (has_change_permission is False); cancelling is what "change"
        # on an order grants.
        return request.user.has_perm("orders.change_order")

    @admin.action(description="Cancel selected orders (restores stock and coupon)", permissions=["cancel"])
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        for order in queryset:
            try:
                order_cancel(order_id=order.id, reason="cancelled by staff")
            except DomainError as exc:
                self.message_user(request, f"{order.number}: {exc.detail}", messages.WARNING)


@admin.register(Coupon)
class CouponAdmin(BoundedLookupsAdmin):
    list_display = ["code", "kind", "value", "owner", "expires_at", "used_at"]
    list_filter = ["kind", "expires_at"]
    search_fields = ["code", "owner__username"]
    readonly_fields = ["used_at", "used_by_order"]
