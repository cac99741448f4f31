from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.api_auth import AuthenticatedRequest
from commerce.api_schema import BAD_REQUEST, CONFLICT, NOT_FOUND, UNAUTHORIZED, ErrorSerializer
from commerce.parsers import RequestTooLarge
from payments import selectors, services
from payments.gateway import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from payments.models import Payment


class PaymentOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = [
            "id",
            "transaction_key",
            "order_id",
            "amount",
            "card_type",
            "status",
            "failure_reason",
            "created_at",
            "finished_at",
        ]


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
    fields={
        "transaction_key": serializers.CharField(),
        "status": serializers.CharField(),
        "changed": serializers.BooleanField(help_text="false for a repeated callback"),
    },
)


class RawBodyParser(BaseParser):
    """The callback's signature covers the exact bytes, so the view reads them unparsed, and
    never more than PAYMENT_CALLBACK_MAX_BYTES (a body without a length is cut there)."""

    media_type = "*/*"

    def parse(  # type: ignore[override]  # DRF takes any parsed value; its stubs only mappings
        self, stream: IO[Any] | None, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> bytes:
        if stream is None:
            return b""
        limit = settings.PAYMENT_CALLBACK_MAX_BYTES
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestTooLarge(f"the body exceeds {limit} bytes")
        return body


class PaymentRequestApi(APIView):
    @extend_schema(
        operation_id="payments_create",
        request=PaymentRequestInputSerializer,
        responses={201: PaymentOutputSerializer, 400: BAD_REQUEST, 401: UNAUTHORIZED, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        payload = PaymentRequestInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        payment = services.payment_request(user=request.user, **payload.validated_data)
        return Response(PaymentOutputSerializer(payment).data, status=status.HTTP_201_CREATED)


class PaymentDetailApi(APIView):
    @extend_schema(
        operation_id="payments_retrieve", responses={200: PaymentOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND}
    )
    def get(self, request: AuthenticatedRequest, payment_id: int) -> Response:
        payment = selectors.payment_get(payment_id=payment_id, user=request.user)
        return Response(PaymentOutputSerializer(payment).data)


class PaymentCallbackApi(APIView):
    """The gateway's answer, authenticated by an HMAC-SHA256 over the signed timestamp, the event
    id and the raw body (payments.gateway; docs/PAYMENTS.md shows the gateway's side)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    # Authenticated by its signature and bounded in size; all of a gateway's callbacks come from
    # a few addresses, which an anonymous rate limit would refuse.
    throttle_classes: list = []
    parser_classes = [RawBodyParser]

    @extend_schema(
        operation_id="payments_callback",
        request={"application/json": CallbackInputSerializer},
        parameters=[
            OpenApiParameter(
                TIMESTAMP_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="Unix seconds; refused outside PAYMENT_CALLBACK_TOLERANCE",
            ),
            OpenApiParameter(
                EVENT_ID_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="unique per callback; a repeated id is refused (409)",
            ),
            OpenApiParameter(
                SIGNATURE_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="hex HMAC-SHA256 of `<timestamp>.<event id>.<raw body>`",
            ),
        ],
        responses={
            200: CallbackOutputSerializer,
            400: BAD_REQUEST,
            401: OpenApiResponse(ErrorSerializer, description="bad, missing or stale signature"),
            404: NOT_FOUND,
            409: CONFLICT,
            413: OpenApiResponse(ErrorSerializer, description="body over PAYMENT_CALLBACK_MAX_BYTES"),
        },
    )
    def post(self, request: Request) -> Response:
        # Refused before a byte of the body is read when the declared length is over the limit.
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > settings.PAYMENT_CALLBACK_MAX_BYTES:
            raise RequestTooLarge(f"the body exceeds {settings.PAYMENT_CALLBACK_MAX_BYTES} bytes")
        data: object = request.data  # RawBodyParser's bytes; the stubs know only parsed data
        body = data if isinstance(data, bytes) else b""
        try:
            outcome = services.payment_callback_handle(body=body, headers=request.headers)
        except services.InvalidSignature as exc:
            return Response({"detail": str(exc), "code": "invalid_signature"}, status=status.HTTP_401_UNAUTHORIZED)
        return Response(
            {
                "transaction_key": outcome.payment.transaction_key,
                "status": outcome.payment.status,
                "changed": outcome.changed,
            }
        )
