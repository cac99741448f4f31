"""Order signals, sent inside the service's transaction with `event=<orders.events.*>`."""

from __future__ import annotations

from django.dispatch import Signal

order_created = Signal()
order_confirmed = Signal()
order_cancelled = Signal()

EVENT_SIGNALS = (order_created, order_confirmed, order_cancelled)
