from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.api_auth import AuthenticatedRequest
from commerce.api_schema import BAD_REQUEST, CONFLICT, NOT_FOUND, UNAUTHORIZED, paginated
from commerce.pagination import paginate
from orders import selectors, services
from orders.models import Order, OrderLine


class OrderLineOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderLine
        fields = ["product_id", "quantity", "unit_price"]


class OrderOutputSerializer(serializers.ModelSerializer):
    lines = OrderLineOutputSerializer(many=True)
    coupon_code = serializers.CharField(source="coupon.code", allow_null=True, default=None)

    class Meta:
        model = Order
        fields = [
            "id",
            "number",
            "status",
            "original_total",
            "discount",
            "final_total",
            "coupon_code",
            "lines",
            "cancel_reason",
            "created_at",
            "confirmed_at",
            "cancelled_at",
        ]


class OrderLineInputSerializer(serializers.Serializer):
    product_id = serializers.IntegerField(min_value=1, max_value=2**62)
    quantity = serializers.IntegerField(min_value=1, max_value=10_000)


class OrderCreateInputSerializer(serializers.Serializer):
    lines = OrderLineInputSerializer(many=True, allow_empty=False, max_length=100)  # type: ignore[call-arg]  # ListSerializer's, DRF 3.14
    coupon_code = serializers.CharField(required=False, allow_null=True, allow_blank=False, max_length=40)

    def validate_lines(self, lines: list[dict]) -> list[dict]:
        product_ids = [line["product_id"] for line in lines]
        if len(product_ids) != len(set(product_ids)):
            raise serializers.ValidationError("each product may appear on one line only")
        return lines


class OrderCancelInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, max_length=200, default="cancelled by the user")


class OrderListCreateApi(APIView):
    @extend_schema(
        operation_id="orders_list",
        parameters=[OpenApiParameter("page", int)],
        responses={200: paginated(OrderOutputSerializer, "OrderPage"), 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        return paginate(
            request=request,
            queryset=selectors.order_list(user=request.user),
            serializer_class=OrderOutputSerializer,
            view=self,
        )

    @extend_schema(
        operation_id="orders_create",
        request=OrderCreateInputSerializer,
        responses={201: OrderOutputSerializer, 400: BAD_REQUEST, 401: UNAUTHORIZED, 409: CONFLICT},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        payload = OrderCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        order = services.order_place(
            user=request.user,
            lines=[services.OrderLineRequest(**line) for line in payload.validated_data["lines"]],
            coupon_code=payload.validated_data.get("coupon_code"),
        )
        order = selectors.order_get(user=request.user, order_id=order.id)
        return Response(OrderOutputSerializer(order).data, status=status.HTTP_201_CREATED)


class OrderDetailApi(APIView):
    @extend_schema(
        operation_id="orders_retrieve", responses={200: OrderOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND}
    )
    def get(self, request: AuthenticatedRequest, order_id: int) -> Response:
        order = selectors.order_get(user=request.user, order_id=order_id)
        return Response(OrderOutputSerializer(order).data)


class OrderCancelApi(APIView):
    @extend_schema(
        operation_id="orders_cancel",
        request=OrderCancelInputSerializer,
        responses={200: OrderOutputSerializer, 400: BAD_REQUEST, 401: UNAUTHORIZED, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: AuthenticatedRequest, order_id: int) -> Response:
        payload = OrderCancelInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.order_cancel(order_id=order_id, user=request.user, reason=payload.validated_data["reason"])
        order = selectors.order_get(user=request.user, order_id=order_id)
        return Response(OrderOutputSerializer(order).data)
