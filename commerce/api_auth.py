"""The token endpoint: username and password for an API token, throttled most strictly
(THROTTLE_LOGIN per client IP: password guessing is what it limits). And the type of the request
a view behind IsAuthenticated receives."""

from __future__ import annotations

from django.contrib.auth.models import User
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.api_schema import BAD_REQUEST, ErrorSerializer
from commerce.throttling import LoginThrottle


class AuthenticatedRequest(Request):
    """A request that passed IsAuthenticated (the default permission): its user is a User.

    For the type checker only: DRF builds a plain Request. A view of the default permission
    annotates `request` with it instead of asserting on `request.user` in every method.
    """

    user: User


TokenOutputSerializer = inline_serializer(name="AuthToken", fields={"token": serializers.CharField()})


class TokenObtainApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]

    @extend_schema(
        operation_id="auth_token_create",
        request=AuthTokenSerializer,
        responses={
            200: TokenOutputSerializer,
            400: BAD_REQUEST,
            429: OpenApiResponse(ErrorSerializer, description="too many attempts"),
        },
    )
    def post(self, request: Request) -> Response:
        payload = AuthTokenSerializer(data=request.data, context={"request": request})
        payload.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=payload.validated_data["user"])
        return Response({"token": token.key})
