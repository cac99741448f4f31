from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from commerce.admin import BoundedLookupsAdmin
from outbox.housekeeping import outbox_requeue, outbox_status
from outbox.models import OutboxEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(BoundedLookupsAdmin[OutboxEvent]):
    """Read-only: rows change through the relay. Dead rows can be requeued."""

    list_display = [
        "seq",
        "type",
        "aggregatetype",
        "aggregateid",
        "topic",
        "status",
        "attempts",
        "created_at",
        "published_at",
        "kafka_partition",
        "kafka_offset",
    ]
    list_filter = ["status", "topic", "type"]
    search_fields = ["=event_id", "=aggregateid", "type"]
    ordering = ["-seq"]
    actions = ["requeue_dead"]
    change_list_template = "admin/outbox/outboxevent/change_list.html"
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return False

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("commerce.outbox_requeue")

    @admin.action(description="Requeue selected dead rows", permissions=["requeue"])
    def requeue_dead(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        ids = [str(e) for e in queryset.filter(status=OutboxEvent.Status.DEAD).values_list("event_id", flat=True)]
        count = outbox_requeue(event_ids=ids) if ids else 0
        self.message_user(request, f"Requeued {count} dead row(s).", messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
        now = timezone.now()
        summary = [
            {
                "topic": r.topic,
                "pending": r.pending,
                "dead": r.dead,
                "oldest_pending_age_s": r.oldest_pending_age_s(now),
                "published_last_minute": r.published_last_minute,
            }
            for r in outbox_status()
        ]
        return super().changelist_view(request, {**(extra_context or {}), "outbox_summary": summary})
