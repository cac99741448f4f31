from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from backoffice.models import DeadLetter, EventLog, InboxEntry, OrderLedger, ProductMetrics
from backoffice.services import dead_letters_redrive
from commerce.admin import BoundedLookupsAdmin


class ReadOnlyAdmin(BoundedLookupsAdmin[Any]):
    """Projections are written by the consumer only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ProductMetrics)
class ProductMetricsAdmin(ReadOnlyAdmin):
    list_display = [
        "product_id",
        "like_count",
        "view_count",
        "sales_quantity",
        "sales_amount",
        "stock",
        "stock_version",
        "updated_at",
    ]
    search_fields = ["=product_id"]
    ordering = ["-sales_amount"]


@admin.register(OrderLedger)
class OrderLedgerAdmin(ReadOnlyAdmin):
    list_display = [
        "order_number",
        "order_id",
        "user_id",
        "status",
        "final_total",
        "discount",
        "refund_due",
        "aggregate_version",
        "event_type",
        "event_time",
    ]
    list_filter = ["status", "event_type"]
    search_fields = ["=order_id", "order_number", "=user_id"]


@admin.register(EventLog)
class EventLogAdmin(ReadOnlyAdmin):
    list_display = [
        "event_type",
        "aggregate_type",
        "aggregate_id",
        "topic",
        "partition",
        "offset",
        "occurred_at",
        "received_at",
    ]
    list_filter = ["event_type", "topic", "aggregate_type"]
    search_fields = ["=event_id", "=aggregate_id"]


@admin.register(InboxEntry)
class InboxEntryAdmin(ReadOnlyAdmin):
    list_display = ["event_type", "event_id", "consumer_group", "topic", "partition", "offset", "handled_at"]
    list_filter = ["consumer_group", "event_type"]
    search_fields = ["=event_id"]


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ["id", "topic", "partition", "offset", "status", "error", "created_at"]
    list_filter = ["status", "topic"]
    search_fields = ["error"]
    actions = ["redrive"]

    def has_redrive_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("commerce.deadletter_redrive")

    @admin.action(description="Redrive selected dead letters", permissions=["redrive"])
    def redrive(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        result = dead_letters_redrive(ids=list(queryset.values_list("id", flat=True)))
        self.message_user(
            request,
            f"Redriven {result.redriven}, still failing {result.still_failing}.",
            messages.SUCCESS if not result.still_failing else messages.WARNING,
        )
