"""DRF throttles whose rates are read from the settings on every request (THROTTLE_*), so that
the environment, and a test's settings override, decide them; DRF's own classes freeze the rates
when they are imported."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
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


class AdminLoginThrottle(LoginThrottle):
    """The admin's login form, per client IP, at the token endpoint's rate, in a bucket of its own."""

    scope = "admin-login"


def admin_login_throttled(login_view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The admin site's login view with its attempts (POSTs) limited like the token endpoint's:
    over THROTTLE_LOGIN a client gets 429 with Retry-After, whatever the credentials. Without it,
    the admin's form let anyone guess staff passwords at any speed."""

    @functools.wraps(login_view)
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            throttle = AdminLoginThrottle()
            # DRF's throttle reads only request.META (the client's address, TRUSTED_PROXIES).
            if not throttle.allow_request(request, None):  # type: ignore[arg-type]
                response = HttpResponse(
                    "Too many login attempts from this address: try again later.\n",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(max(1, math.ceil(throttle.wait() or 1)))
                return response
        return login_view(request, *args, **kwargs)

    return view
