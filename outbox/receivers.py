"""The signal receiver that turns a domain signal into an outbox row.

Each domain app connects it to its event signals in `AppConfig.ready` with
`outbox_connect(signals)`; a signal is sent inside the service's transaction with `event=...`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.dispatch import Signal

from outbox.envelope import DomainEvent
from outbox.recording import outbox_record

DISPATCH_UID = "outbox.record"


def outbox_record_receiver(sender: Any, *, event: DomainEvent, **kwargs: Any) -> None:
    outbox_record(event=event)


def outbox_connect(signals: Iterable[Signal]) -> None:
    for signal in signals:
        signal.connect(outbox_record_receiver, dispatch_uid=DISPATCH_UID)


def outbox_disconnect(signals: Iterable[Signal]) -> None:
    """For benchmarks that measure the services without the outbox; never in production."""
    for signal in signals:
        signal.disconnect(dispatch_uid=DISPATCH_UID)
