from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.api_schema import BAD_REQUEST, CONFLICT, NOT_FOUND, UNAUTHORIZED, ErrorSerializer
from orders.models import Order
from payments import services
from payments.models import Payment


class PaymentOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = ["id", "transaction_key", "order_id", "amount", "card_type", "status",
                  "failure_reason", "created_at", "finished_at"]


class PaymentRequestInputSerializer(serializers.Serializer):
    order_id = serializers.IntegerField(min_value=1, max_value=2**62)
    card_type = serializers.ChoiceField(choices=Payment.CardType.choices)


CallbackInputSerializer = inline_serializer(
    name="PaymentCallback",
    fields={
        "transaction_key": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["COMPLETED", "FAILED"]),
        "reason": serializers.CharField(required=False, allow_blank=True),
    },
)
CallbackOutputSerializer = inline_serializer(
    name="PaymentCallbackResult",
    fields={"transaction_key": serializers.CharField(), "status": serializers.CharField(),
            "changed": serializers.BooleanField(help_text="false for a repeated callback")},
)


class RawBodyParser(BaseParser):
    """The callback's signature covers the exact bytes, so the view reads them unparsed."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # noqa: ANN001, ANN201
        return stream.read() if stream is not None else b""


class PaymentRequestApi(APIView):
    @extend_schema(operation_id="payments_create", request=PaymentRequestInputSerializer,
                   responses={201: PaymentOutputSerializer, 400: BAD_REQUEST, 401: UNAUTHORIZED,
                              404: NOT_FOUND, 409: CONFLICT})
    def post(self, request: Request) -> Response:
        payload = PaymentRequestInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            payment = services.payment_request(user=request.user, **payload.validated_data)
        except Order.DoesNotExist as exc:
            raise Http404 from exc
        return Response(PaymentOutputSerializer(payment).data, status=status.HTTP_201_CREATED)


class PaymentDetailApi(APIView):
    @extend_schema(operation_id="payments_retrieve",
                   responses={200: PaymentOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND})
    def get(self, request: Request, payment_id: int) -> Response:
        try:
            payment = Payment.objects.get(id=payment_id, user=request.user)
        except Payment.DoesNotExist as exc:
            raise Http404 from exc
        return Response(PaymentOutputSerializer(payment).data)


class PaymentCallbackApi(APIView):
    """The gateway's answer. Authenticated by an HMAC-SHA256 of the raw body, hex, in X-Signature."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [RawBodyParser]

    @extend_schema(
        operation_id="payments_callback",
        request={"application/json": CallbackInputSerializer},
        parameters=[OpenApiParameter("X-Signature", str, OpenApiParameter.HEADER, required=True,
                                     description="hex HMAC-SHA256 of the raw body under the shared secret")],
        responses={200: CallbackOutputSerializer, 400: BAD_REQUEST,
                   401: OpenApiResponse(ErrorSerializer, description="bad or missing signature"),
                   404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: Request) -> Response:
        body = request.data if isinstance(request.data, bytes) else b""
        try:
            outcome = services.payment_callback_handle(
                body=body, signature=request.headers.get("X-Signature"))
        except services.InvalidSignature as exc:
            return Response({"detail": str(exc), "code": "invalid_signature"},
                            status=status.HTTP_401_UNAUTHORIZED)
        except Payment.DoesNotExist as exc:
            raise Http404 from exc
        return Response({"transaction_key": outcome.payment.transaction_key,
                         "status": outcome.payment.status, "changed": outcome.changed})
