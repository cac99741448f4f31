from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from commerce.admin import ReadOnlyAdmin
from payments.models import Payment, RefundDuePayment
from payments.selectors import payment_refunds_due


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    """Read-only: a payment changes only through the gateway's signed callback or the
    reconciliation that asks the gateway."""

    list_display = [
        "transaction_key",
        "order",
        "user",
        "amount",
        "card_type",
        "status",
        "failure_reason",
        "refund_reason",
        "created_at",
    ]
    list_filter = ["status", "card_type", "created_at"]
    search_fields = ["transaction_key", "order__number", "user__username"]
    readonly_fields = [f.name for f in Payment._meta.fields]


@admin.register(RefundDuePayment)
class RefundDuePaymentAdmin(PaymentAdmin):
    """Captured money the system cannot keep (PaymentRefundRequired): refund it at the gateway."""

    list_display = ["transaction_key", "order", "user", "amount", "card_type", "refund_reason", "finished_at"]
    list_filter = ["refund_reason", "card_type"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Payment]:
        return payment_refunds_due()
