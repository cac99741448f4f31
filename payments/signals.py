"""Payment signals, sent inside the service's transaction with `event=<payments.events.*>`."""

from __future__ import annotations

from django.dispatch import Signal

payment_completed = Signal()
payment_failed = Signal()

EVENT_SIGNALS = (payment_completed, payment_failed)
