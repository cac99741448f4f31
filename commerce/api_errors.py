"""One exception handler for the API: domain errors become 4xx with a code, never a 500, and a
missing row (any model's DoesNotExist, e.g. someone else's order) is a 404: views do not catch it."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from commerce.errors import DomainError, DomainValidationError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainValidationError):
        return Response({exc.field: [exc.detail], "code": exc.code}, status=exc.status)
    if isinstance(exc, DomainError):
        body = {"detail": exc.detail, "code": exc.code, **exc.context}
        return Response(body, status=exc.status)
    if isinstance(exc, ObjectDoesNotExist):
        exc = Http404()
    return drf_exception_handler(exc, context)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 404 of a path no URL matches (`handler404`): JSON under /api/, like every other answer
    of the API (an id that is not a number, `/api/orders/abc/`, was Django's HTML page)."""
    if request.path_info == "/api" or request.path_info.startswith("/api/"):  # path_info: without a deploy prefix
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return page_not_found(request, exception)
