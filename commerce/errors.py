"""Domain errors shared by the apps; the API maps them to HTTP responses in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A business rule refused the operation. `status` is the HTTP status the API answers with."""

    status = 409
    code = "conflict"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class Conflict(DomainError):
    status = 409
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class DomainValidationError(DomainError):
    """Input that is well-formed but refused by a rule (an expired coupon): 400 with the field."""

    status = 400
    code = "invalid"

    def __init__(self, detail: str, *, field: str, **context: Any) -> None:
        super().__init__(detail, field=field, **context)
        self.field = field
