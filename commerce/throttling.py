"""DRF throttles whose rates are read from the settings on every request (THROTTLE_*), so that
the environment, and a test's settings override, decide them; DRF's own classes freeze the rates
when they are imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_THROTTLE_CLASSES)
    from rest_framework.request import Request
    from rest_framework.views import APIView


class AnonThrottle(AnonRateThrottle):
    """Anonymous requests, per client IP."""

    def get_rate(self) -> str:
        return settings.THROTTLE_ANON


class UserThrottle(UserRateThrottle):
    """Authenticated requests per user (anonymous ones fall back to the IP, as DRF does)."""

    def get_rate(self) -> str:
        return settings.THROTTLE_USER


class LoginThrottle(SimpleRateThrottle):
    """The token endpoint, per client IP whoever the credentials name: the strictest."""

    scope = "login"

    def get_rate(self) -> str:
        return settings.THROTTLE_LOGIN

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
