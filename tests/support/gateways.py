"""A gateway for tests that asks nothing: the test plays the gateway and sends the callback."""

from __future__ import annotations


class SilentGateway:
    requested: list[str] = []

    def payment_request(self, *, transaction_key: str) -> None:
        SilentGateway.requested.append(transaction_key)
