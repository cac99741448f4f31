"""Staff-only read API over the projections."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backoffice.models import DeadLetter, EventLog, OrderLedger, ProductMetrics
from commerce.api_schema import BAD_REQUEST, FORBIDDEN, UNAUTHORIZED, paginated
from commerce.pagination import paginate

ORDERINGS = {"sales": "-sales_amount", "likes": "-like_count", "views": "-view_count", "product": "product_id"}


class ProductMetricsOutputSerializer(serializers.ModelSerializer[ProductMetrics]):
    class Meta:
        model = ProductMetrics
        fields = [
            "product_id",
            "like_count",
            "view_count",
            "sales_quantity",
            "sales_amount",
            "stock",
            "stock_version",
            "updated_at",
        ]


class OrderLedgerOutputSerializer(serializers.ModelSerializer[OrderLedger]):
    class Meta:
        model = OrderLedger
        fields = [
            "order_id",
            "order_number",
            "user_id",
            "status",
            "original_total",
            "discount",
            "final_total",
            "refund_due",
            "refund_reason",
            "aggregate_version",
            "event_type",
            "event_id",
            "event_time",
        ]


class EventLogOutputSerializer(serializers.ModelSerializer[EventLog]):
    class Meta:
        model = EventLog
        fields = [
            "event_id",
            "event_type",
            "event_version",
            "aggregate_type",
            "aggregate_id",
            "topic",
            "partition",
            "offset",
            "occurred_at",
            "received_at",
            "traceparent",
            "payload",
        ]


class DeadLetterOutputSerializer(serializers.ModelSerializer[DeadLetter]):
    class Meta:
        model = DeadLetter
        fields = [
            "id",
            "consumer_group",
            "topic",
            "partition",
            "offset",
            "error",
            "status",
            "created_at",
            "redriven_at",
        ]


class StaffApi(APIView):
    permission_classes = [IsAdminUser]


class ProductMetricsListApi(StaffApi):
    class FilterSerializer(serializers.Serializer[Any]):
        ordering = serializers.ChoiceField(choices=list(ORDERINGS), required=False, default="sales")

    @extend_schema(
        operation_id="backoffice_metrics_list",
        parameters=[OpenApiParameter("ordering", str, enum=list(ORDERINGS)), OpenApiParameter("page", int)],
        responses={
            200: paginated(ProductMetricsOutputSerializer, "ProductMetricsPage"),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            403: FORBIDDEN,
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        metrics = ProductMetrics.objects.order_by(ORDERINGS[filters.validated_data["ordering"]], "product_id")
        return paginate(request=request, queryset=metrics, serializer_class=ProductMetricsOutputSerializer, view=self)


class OrderLedgerListApi(StaffApi):
    @extend_schema(
        operation_id="backoffice_ledger_list",
        parameters=[OpenApiParameter("page", int)],
        responses={200: paginated(OrderLedgerOutputSerializer, "OrderLedgerPage"), 401: UNAUTHORIZED, 403: FORBIDDEN},
    )
    def get(self, request: Request) -> Response:
        return paginate(
            request=request,
            queryset=OrderLedger.objects.order_by("-event_time", "order_id"),
            serializer_class=OrderLedgerOutputSerializer,
            view=self,
        )


class EventLogListApi(StaffApi):
    class FilterSerializer(serializers.Serializer[Any]):
        event_type = serializers.CharField(required=False, max_length=100)
        aggregate_id = serializers.CharField(required=False, max_length=64)
        topic = serializers.CharField(required=False, max_length=249)

    @extend_schema(
        operation_id="backoffice_events_list",
        parameters=[
            OpenApiParameter("event_type", str),
            OpenApiParameter("aggregate_id", str),
            OpenApiParameter("topic", str),
            OpenApiParameter("page", int),
        ],
        responses={
            200: paginated(EventLogOutputSerializer, "EventLogPage"),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            403: FORBIDDEN,
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        events = EventLog.objects.filter(**filters.validated_data).order_by("-id")
        return paginate(request=request, queryset=events, serializer_class=EventLogOutputSerializer, view=self)


class DeadLetterListApi(StaffApi):
    @extend_schema(
        operation_id="backoffice_deadletters_list",
        parameters=[OpenApiParameter("page", int)],
        responses={200: paginated(DeadLetterOutputSerializer, "DeadLetterPage"), 401: UNAUTHORIZED, 403: FORBIDDEN},
    )
    def get(self, request: Request) -> Response:
        return paginate(
            request=request,
            queryset=DeadLetter.objects.order_by("-id"),
            serializer_class=DeadLetterOutputSerializer,
            view=self,
        )
