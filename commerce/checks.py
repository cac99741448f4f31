"""System checks that make a production process refuse to start with settings that would approve
payments it never took, or accept callbacks anyone can forge.

Registered as errors (not `deploy=True` warnings): `check --deploy`, `runserver`, `migrate` and
every other management command stop with the message. The checks apply when DEBUG is off; the
development defaults (DEBUG on) are the simulator and a dev-only secret.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string

SIMULATOR = "payments.simulator.SimulatedGateway"


@register("payments")
def payment_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    gateway = settings.PAYMENT_GATEWAY
    if not gateway:
        errors.append(
            Error(
                "PAYMENT_GATEWAY is not set: no payment can be requested.",
                hint="Set PAYMENT_GATEWAY to the dotted path of the gateway class; the simulator "
                "is the default only with DEBUG on.",
                id="payments.E001",
            )
        )
    else:
        try:
            gateway_class = import_string(gateway)
        except ImportError as exc:
            errors.append(Error(f"PAYMENT_GATEWAY {gateway!r} cannot be imported: {exc}", id="payments.E002"))
        else:
            missing = [
                name
                for name in ("payment_request", "payment_status")
                if not callable(getattr(gateway_class, name, None))
            ]
            if missing:
                errors.append(
                    Error(
                        f"PAYMENT_GATEWAY {gateway!r} lacks {', '.join(missing)}",
                        hint="See payments.gateway.PaymentGateway.",
                        id="payments.E002",
                    )
                )
        if not settings.DEBUG and gateway == SIMULATOR:
            errors.append(
                Error(
                    "PAYMENT_GATEWAY is the simulated gateway while DEBUG is off: it approves "
                    "payments that were never charged.",
                    id="payments.E003",
                )
            )
    secret = settings.PAYMENT_CALLBACK_SECRET or ""
    minimum = settings.PAYMENT_CALLBACK_SECRET_MIN_LENGTH
    if not secret:
        errors.append(
            Error(
                "PAYMENT_CALLBACK_SECRET is not set: gateway callbacks cannot be verified.",
                hint=f"Set the secret shared with the gateway (at least {minimum} characters).",
                id="payments.E004",
            )
        )
    elif not settings.DEBUG and len(secret) < minimum:
        errors.append(
            Error(
                f"PAYMENT_CALLBACK_SECRET has {len(secret)} characters; at least {minimum} are "
                "required so that callbacks cannot be forged.",
                id="payments.E004",
            )
        )
    return errors


@register("security")
def site_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    messages: list[Error | Warning] = []
    if settings.DEBUG:
        return messages
    if not settings.ALLOWED_HOSTS:
        messages.append(
            Warning("ALLOWED_HOSTS is empty with DEBUG off: the API answers 400 to every request.", id="commerce.W001")
        )
    if "*" in settings.ALLOWED_HOSTS:
        messages.append(Error("ALLOWED_HOSTS contains '*' with DEBUG off.", id="commerce.E001"))
    if any(origin.startswith("http://") for origin in settings.CSRF_TRUSTED_ORIGINS):
        messages.append(Error("CSRF_TRUSTED_ORIGINS lists an http:// origin with DEBUG off.", id="commerce.E002"))
    if not settings.TRUSTED_PROXIES_GIVEN:
        messages.append(
            Warning(
                "TRUSTED_PROXIES is not set: the rate limits take the connection's address as the client's. "
                "Behind a proxy that is the proxy's, one bucket for every client (ten wrong passwords a "
                "minute from anyone would lock every login out).",
                hint="Set it to the number of proxies in front that append to X-Forwarded-For, 0 if none.",
                id="commerce.W002",
            )
        )
    return messages


def fail_closed() -> None:
    """Raise ImproperlyConfigured when a check above reports an error.

    For the entry points that run no management command: a WSGI or ASGI server (gunicorn,
    uvicorn) loads `application` without Django's checks, and would otherwise serve with no
    gateway or an empty callback secret.
    """
    from django.core.checks import ERROR, run_checks
    from django.core.exceptions import ImproperlyConfigured

    errors = [
        message
        for message in run_checks(tags=["payments", "security"])
        if message.level >= ERROR and not message.is_silenced()
    ]
    if errors:
        raise ImproperlyConfigured("; ".join(f"{error.id}: {error.msg}" for error in errors))
