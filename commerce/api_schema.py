"""Shared OpenAPI pieces: the error bodies every endpoint may answer with."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "detail": serializers.CharField(),
        "code": serializers.CharField(required=False),
    },
)
ConflictSerializer = inline_serializer(
    name="Conflict",
    fields={
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "status": serializers.CharField(required=False, help_text="current state"),
        "available": serializers.IntegerField(required=False, help_text="units in stock"),
        "product_id": serializers.IntegerField(required=False),
        "requested": serializers.IntegerField(required=False),
    },
)
ValidationErrorSerializer = inline_serializer(
    name="ValidationError",
    fields={
        "field_name": serializers.ListField(child=serializers.CharField(), help_text="one entry per invalid field")
    },
)

BAD_REQUEST = OpenApiResponse(ValidationErrorSerializer, description="invalid input: field and reason")
UNAUTHORIZED = OpenApiResponse(ErrorSerializer, description="not authenticated")
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="not allowed")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="not found (or not yours)")
CONFLICT = OpenApiResponse(ConflictSerializer, description="refused by the current state")


def paginated(serializer_class: type[serializers.Serializer], name: str) -> serializers.Serializer:
    """The schema of a PageNumberPagination page of `serializer_class` items."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )
