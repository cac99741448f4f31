"""Gateways for tests: the test plays the gateway, sends the callbacks and scripts the answers
to a status lookup."""

from __future__ import annotations

from payments.gateway import ChargeState, ChargeStatus, GatewayUnavailable, callback_headers


class SilentGateway:
    """Asks nothing; a status lookup says "never seen" unless a test scripted an answer."""

    requested: list[str] = []
    answers: dict[str, ChargeStatus] = {}
    unreachable: bool = False

    def payment_request(self, *, transaction_key: str) -> None:
        SilentGateway.requested.append(transaction_key)

    def payment_status(self, *, transaction_key: str) -> ChargeStatus:
        if SilentGateway.unreachable:
            raise GatewayUnavailable("connection refused (scripted)")
        return SilentGateway.answers.get(transaction_key, ChargeStatus(ChargeState.UNKNOWN))


def gateway_script_reset() -> None:
    SilentGateway.requested = []
    SilentGateway.answers = {}
    SilentGateway.unreachable = False


def signed(body: bytes, *, timestamp: int | None = None, event_id: str | None = None) -> dict[str, str]:
    """The gateway's headers for `body` as Django test client keywords (HTTP_X_...)."""
    return {
        "HTTP_" + name.upper().replace("-", "_"): value
        for name, value in callback_headers(body, timestamp=timestamp, event_id=event_id).items()
    }
