"""The API's request parsers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any, cast

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "too_large"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering what it would have failed on with a 500 like any other bad
    body: JSON nested past Python's recursion limit (a few kilobytes of `[`) is a 400, DRF
    catching only ValueError; a declared Content-Length over DATA_UPLOAD_MAX_MEMORY_SIZE is a
    413 before a byte is read. DRF reads the request's stream, not `request.body`, so Django's
    own limit never applied, and a read of a length too large for an index was an OverflowError,
    on the anonymous token endpoint too."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        request = (parser_context or {}).get("request")
        if request is not None:
            declared_length_check(request.META)
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc


def declared_length_check(meta: Mapping[str, Any]) -> None:
    """Refuse a body by its declared length, as DRF reads it: 400 when it is negative, 413 over
    DATA_UPLOAD_MAX_MEMORY_SIZE (None: no limit). DRF parses nothing when it is not a number."""
    try:
        declared = int(meta.get("CONTENT_LENGTH", meta.get("HTTP_CONTENT_LENGTH", 0)))
    except (TypeError, ValueError) as exc:
        raise ParseError("Content-Length is not a number") from exc
    if declared < 0:
        raise ParseError("Content-Length is negative")
    limit = cast("int | None", settings.DATA_UPLOAD_MAX_MEMORY_SIZE)  # the stubs say int; Django allows None
    if limit is not None and declared > limit:
        raise RequestTooLarge(f"the body exceeds {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)")
