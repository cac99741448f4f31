"""The pipeline dashboard in the admin (staff only): is every event flowing?

Staff who may view what a page shows, like the admin's lists (superusers pass): the overview
needs `outbox.view_outboxevent` (its recent orders are listed with `orders.view_order` too), an
order's trace needs both, since it lists the order and its outbox rows. Anyone else gets a 403.

Outbox backlog and publish rate, topics that differ from the replication policy, consumer lag
per partition (Kafka's committed offsets against the end offsets), dead letters, a chart of
events per second, and the trace of one order from its HTTP request to the back office.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from backoffice.models import DeadLetter, InboxEntry
from commerce.tracing import trace_id_of
from orders.models import Order
from outbox.housekeeping import outbox_status
from outbox.models import OutboxEvent
from outbox.topics import topics_check_report

logger = logging.getLogger(__name__)

CHART_MINUTES = 10
CHART_BUCKET_S = 10


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


# How long a status page waits for Kafka, per client: a health probe or an operator's page
# answers "Kafka unavailable" within seconds (kafka-python's bootstrap default is 30 s).
STATUS_KAFKA_TIMEOUT_S = 3.0


def consumer_lag(group: str) -> list[PartitionLag] | str:
    """Lag of the group per partition, or the reason it cannot be read now.

    A consumer that names the group but never subscribes reads the group's committed offsets
    without joining it (no rebalance of the real consumers).
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaTimeoutError

    from outbox.kafka import topic_auto_create_off

    try:
        reader = KafkaConsumer(
            bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            group_id=group,
            enable_auto_commit=False,
            request_timeout_ms=int(STATUS_KAFKA_TIMEOUT_S * 1000),
            bootstrap_timeout_ms=int(STATUS_KAFKA_TIMEOUT_S * 1000),
            allow_auto_create_topics=False,  # looking at a missing topic must not create it
            **settings.KAFKA_SECURITY,
        )
        topic_auto_create_off(reader)
    except Exception as exc:  # noqa: BLE001 - shown on the page instead of the table
        return f"Kafka unavailable: {type(exc).__name__}: {exc}"
    # kafka-python waits for the group's coordinator without end unless told a timeout (a
    # coordinator that does not answer, __consumer_offsets without a leader): one deadline for
    # every read after the bootstrap.
    deadline = time.monotonic() + STATUS_KAFKA_TIMEOUT_S

    def left_ms() -> int:
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaTimeoutError(f"no answer within {STATUS_KAFKA_TIMEOUT_S:g} s")
        return max(1, int(left * 1000))

    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in settings.KAFKA_TOPICS.values()
            for p in sorted(reader.partitions_for_topic(topic) or [])
        ]
        ends = reader.end_offsets(partitions, timeout_ms=left_ms()) if partitions else {}
        return [
            PartitionLag(tp.topic, tp.partition, reader.committed(tp, timeout_ms=left_ms()), ends[tp])
            for tp in partitions
        ]
    except Exception as exc:  # noqa: BLE001 - as above: shown on the page instead of the table
        return f"Kafka unavailable: {type(exc).__name__}: {exc}"
    finally:
        reader.close()


def _per_bucket(timestamps: list[datetime], since: datetime) -> list[float]:
    buckets = [0] * (CHART_MINUTES * 60 // CHART_BUCKET_S)
    for ts in timestamps:
        index = int((ts - since).total_seconds() // CHART_BUCKET_S)
        if 0 <= index < len(buckets):
            buckets[index] += 1
    return [count / CHART_BUCKET_S for count in buckets]


def chart_svg(series: dict[str, tuple[str, list[float]]], *, width: int = 640, height: int = 160) -> str:
    """A small line chart of events per second, drawn on the server as SVG."""
    peak = max([max(values, default=0) for _, values in series.values()] + [1.0])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" '
        f'role="img" aria-label="events per second">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f8f8" stroke="#ccc"/>',
        f'<text x="4" y="12" font-size="10">{peak:.0f}/s</text>',
        f'<text x="4" y="{height + 14}" font-size="10">-{CHART_MINUTES} min</text>',
        f'<text x="{width - 30}" y="{height + 14}" font-size="10">now</text>',
    ]
    for label_index, (name, (color, values)) in enumerate(series.items()):
        if values:
            step = width / max(len(values) - 1, 1)
            points = " ".join(f"{i * step:.1f},{height - (v / peak) * (height - 16):.1f}" for i, v in enumerate(values))
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<text x="{80 + 110 * label_index}" y="{height + 14}" font-size="11" fill="{color}">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


@permission_required("outbox.view_outboxevent", raise_exception=True)
def pipeline_dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    since = now - timedelta(minutes=CHART_MINUTES)
    group = settings.BACKOFFICE_GROUP_ID
    topics = [
        {
            "topic": r.topic,
            "pending": r.pending,
            "dead": r.dead,
            "oldest_pending_age_s": r.oldest_pending_age_s(now),
            "published_last_minute": r.published_last_minute,
        }
        for r in outbox_status()
    ]
    totals = OutboxEvent.objects.aggregate(
        pending=Count("seq", filter=Q(status=OutboxEvent.Status.PENDING)),
        dead=Count("seq", filter=Q(status=OutboxEvent.Status.DEAD)),
        published=Count("seq", filter=Q(status=OutboxEvent.Status.PUBLISHED)),
    )
    # published_at is nullable (a pending row has none): mypy cannot see the filter excludes it.
    published_times = [
        t
        for t in OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED, published_at__gte=since).values_list(
            "published_at", flat=True
        )
        if t is not None
    ]
    handled_times = list(
        InboxEntry.objects.filter(consumer_group=group, handled_at__gte=since).values_list("handled_at", flat=True)
    )
    lag = consumer_lag(group)
    topic_mismatches, topic_check_error = topics_check_report(timeout_s=STATUS_KAFKA_TIMEOUT_S)
    context = {
        **admin_context(request, "Pipeline"),
        "topics": topics,
        "totals": totals,
        "consumed_total": InboxEntry.objects.filter(consumer_group=group).count(),
        "publish_rate": sum(1 for t in published_times if t >= now - timedelta(minutes=1)) / 60,
        "lag": lag if isinstance(lag, list) else None,
        "lag_error": lag if isinstance(lag, str) else None,
        "lag_total": sum(p.lag for p in lag) if isinstance(lag, list) else None,
        "dead_letters_open": DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).count(),
        "recent_orders": Order.objects.order_by("-id")[:10] if request.user.has_perm("orders.view_order") else None,
        "chart": chart_svg(
            {
                "published": ("#2b6cb0", _per_bucket(published_times, since)),
                "consumed": ("#2f855a", _per_bucket(handled_times, since)),
            }
        ),
        "group": group,
        "topic_mismatches": [str(m) for m in topic_mismatches],
        "topic_check_error": topic_check_error,
    }
    return render(request, "admin/pipeline/dashboard.html", context)


@permission_required(["orders.view_order", "outbox.view_outboxevent"], raise_exception=True)
def order_trace(request: HttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(Order.objects.prefetch_related("lines", "payments"), id=order_id)
    rows = list(
        OutboxEvent.objects.filter(
            Q(aggregatetype="order", aggregateid=str(order.id))
            | Q(type="StockChanged", payload__order_id=str(order.id))
        ).order_by("seq")
    )
    handled = dict(
        InboxEntry.objects.filter(
            consumer_group=settings.BACKOFFICE_GROUP_ID, event_id__in=[r.event_id for r in rows]
        ).values_list("event_id", "handled_at")
    )
    events = [
        {
            "row": row,
            "handled_at": handled.get(row.event_id),
            "trace_id": trace_id_of(row.headers.get("traceparent")),
            "latency_ms": (
                (handled[row.event_id] - row.occurred_at).total_seconds() * 1000 if row.event_id in handled else None
            ),
        }
        for row in rows
    ]
    context = {
        **admin_context(request, f"Trace of order {order.number}"),
        "order": order,
        "events": events,
        "request_trace_id": events[0]["trace_id"] if events else None,
    }
    return render(request, "admin/pipeline/order_trace.html", context)


def admin_context(request: HttpRequest, title: str) -> dict:
    from django.contrib import admin

    return {**admin.site.each_context(request), "title": title}
