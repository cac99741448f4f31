from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from commerce.admin import ReadOnlyAdmin
from commerce.errors import IllegalTransition
from payments.models import Payment, RefundDuePayment
from payments.selectors import payment_refunds_due
from payments.services import payment_review_ask_gateway, payment_review_settle


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    """Read-only: a payment changes only through the gateway's signed callback, the
    reconciliation that asks the gateway, or, for a payment under review (NEEDS_REVIEW), the
    actions below (docs/PAYMENTS.md, "Under review")."""

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
    actions = ["review_ask_gateway", "review_captured", "review_not_captured"]

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("commerce.payment_review_settle")

    def _under_review(self, request: HttpRequest, queryset: QuerySet[Payment]) -> list[str]:
        keys = list(queryset.filter(status=Payment.Status.NEEDS_REVIEW).values_list("transaction_key", flat=True))
        skipped = queryset.count() - len(keys)
        if skipped:
            self.message_user(
                request, f"{skipped} selected payment(s) not under review: left as they are.", messages.WARNING
            )
        return keys

    @admin.action(description="Under review: ask the gateway again now", permissions=["review"])
    def review_ask_gateway(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        for key in self._under_review(request, queryset):
            status = payment_review_ask_gateway(transaction_key=key)
            self.message_user(request, f"{key}: {status}", messages.INFO)

    @admin.action(description="Under review: captured (checked at the gateway: money taken)", permissions=["review"])
    def review_captured(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        self._review_settle(request, queryset, captured=True)

    @admin.action(
        description="Under review: not captured (checked at the gateway: no money taken)", permissions=["review"]
    )
    def review_not_captured(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        self._review_settle(request, queryset, captured=False)

    def _review_settle(self, request: HttpRequest, queryset: QuerySet[Payment], *, captured: bool) -> None:
        for key in self._under_review(request, queryset):
            try:
                payment = payment_review_settle(
                    transaction_key=key, captured=captured, reviewer=request.user.get_username()
                )
            except IllegalTransition as exc:  # the gateway's answer came first: it stands
                self.message_user(request, f"{key}: {exc.detail}", messages.WARNING)
            else:
                self.message_user(request, f"{key}: {payment.status}", messages.SUCCESS)


@admin.register(RefundDuePayment)
class RefundDuePaymentAdmin(PaymentAdmin):
    """Captured money the system cannot keep (PaymentRefundRequired): refund it at the gateway."""

    list_display = ["transaction_key", "order", "user", "amount", "card_type", "refund_reason", "finished_at"]
    list_filter = ["refund_reason", "card_type"]
    actions = []  # refunds are made at the gateway; the review actions are for NEEDS_REVIEW

    def get_queryset(self, request: HttpRequest) -> QuerySet[Payment]:
        return payment_refunds_due()
