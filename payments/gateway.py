"""The payment-gateway boundary, and the signature of its callbacks.

A gateway is asked to charge a payment and answers later through the callback endpoint with a
body signed by HMAC-SHA256 under PAYMENT_CALLBACK_SECRET, hex in the `X-Signature` header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


class PaymentGateway(Protocol):
    def payment_request(self, *, transaction_key: str) -> None:
        """Ask for the charge; called after the payment's transaction committed."""


def callback_signature(body: bytes) -> str:
    secret = settings.PAYMENT_CALLBACK_SECRET
    if not secret:
        raise RuntimeError("PAYMENT_CALLBACK_SECRET is not set")
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def callback_signature_valid(body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    # Bytes on both sides: compare_digest refuses non-ASCII text, and a header may hold anything.
    presented = signature.strip().lower().encode("utf-8", errors="replace")
    return hmac.compare_digest(callback_signature(body).encode(), presented)


def callback_body(*, transaction_key: str, status: str, reason: str = "") -> bytes:
    return json.dumps({"transaction_key": transaction_key, "status": status,
                       "reason": reason}).encode()


class SimulatedGateway:
    """Answers asynchronously through the real callback, failing a configurable share.

    The answer is a Celery task (delay PAYMENT_SIM_DELAY, failure rate PAYMENT_SIM_FAILURE_RATE)
    that POSTs the signed callback to PAYMENT_CALLBACK_BASE_URL, or, when that is empty (tests),
    hands the same signed body to the same handler the endpoint uses.
    """

    def payment_request(self, *, transaction_key: str) -> None:
        from payments.tasks import simulated_gateway_answer

        simulated_gateway_answer.apply_async(args=[transaction_key],
                                             countdown=settings.PAYMENT_SIM_DELAY)


def gateway_get() -> PaymentGateway:
    return import_string(settings.PAYMENT_GATEWAY)()
