"""The payment-gateway boundary, and the signature of its callbacks.

A gateway is asked to charge a payment (`payment_request`) and answers later through the
callback endpoint; it can also be asked where a charge stands (`payment_status`), which the
reconciliation does before it decides anything about a payment left without an answer.

A callback is signed with HMAC-SHA256 under PAYMENT_CALLBACK_SECRET over
`<timestamp>.<event id>.<raw body>` (docs/PAYMENTS.md shows a gateway's side):

    X-Gateway-Timestamp: 1764086400          (Unix seconds; refused outside PAYMENT_CALLBACK_TOLERANCE)
    X-Gateway-Event-Id:  evt_3b9f...         (unique per callback; a repeated id is refused)
    X-Signature:         <hex digest>

This module imports nothing of the rest of payments: services, tasks and the simulator use it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

TIMESTAMP_HEADER = "X-Gateway-Timestamp"
EVENT_ID_HEADER = "X-Gateway-Event-Id"
SIGNATURE_HEADER = "X-Signature"


class ChargeState(enum.Enum):
    """What a gateway says of a charge when asked."""

    COMPLETED = "COMPLETED"  # captured
    FAILED = "FAILED"  # declined or otherwise not captured, for good
    PROCESSING = "PROCESSING"  # seen, no outcome yet
    UNKNOWN = "UNKNOWN"  # never seen: the request never reached it, so nothing was captured


@dataclass(frozen=True)
class ChargeStatus:
    state: ChargeState
    reason: str = ""


class GatewayUnavailable(Exception):
    """The gateway could not be asked (network, timeout, 5xx): nothing may be concluded."""


class PaymentGateway(Protocol):
    def payment_request(self, *, transaction_key: str) -> None:
        """Ask for the charge; called after the payment's transaction committed."""

    def payment_status(self, *, transaction_key: str) -> ChargeStatus:
        """Where the charge stands. Raises GatewayUnavailable when the gateway cannot say."""


def gateway_get() -> PaymentGateway:
    if not settings.PAYMENT_GATEWAY:
        # The system check (payments.E001) refuses to start without one; this is the last line.
        raise RuntimeError("PAYMENT_GATEWAY is not set")
    return import_string(settings.PAYMENT_GATEWAY)()


def _secret() -> bytes:
    secret = settings.PAYMENT_CALLBACK_SECRET
    if not secret:
        raise RuntimeError("PAYMENT_CALLBACK_SECRET is not set")
    return secret.encode()


def callback_signature(body: bytes, *, timestamp: str, event_id: str) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<event id>.<body>` under the shared secret."""
    message = timestamp.encode() + b"." + event_id.encode() + b"." + body
    return hmac.new(_secret(), message, hashlib.sha256).hexdigest()


def callback_headers(body: bytes, *, timestamp: int | None = None, event_id: str | None = None) -> dict[str, str]:
    """The headers a gateway sends with `body` (the simulator and the tests sign with this)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    event = event_id or f"evt_{secrets.token_hex(16)}"
    return {
        TIMESTAMP_HEADER: stamp,
        EVENT_ID_HEADER: event,
        SIGNATURE_HEADER: callback_signature(body, timestamp=stamp, event_id=event),
    }


def callback_signature_valid(body: bytes, *, timestamp: str, event_id: str, signature: str | None) -> bool:
    if not signature:
        return False
    # Bytes on both sides: compare_digest refuses non-ASCII text, and a header may hold anything.
    presented = signature.strip().lower().encode("utf-8", errors="replace")
    expected = callback_signature(body, timestamp=timestamp, event_id=event_id).encode()
    return hmac.compare_digest(expected, presented)


def callback_body(*, transaction_key: str, status: str, reason: str = "") -> bytes:
    return json.dumps({"transaction_key": transaction_key, "status": status, "reason": reason}).encode()
