"""Payment signals, sent inside the service's transaction with `event=<payments.events.*>`.

The outbox records them (PaymentsConfig.ready); orders react to them after commit
(orders.receivers), so payments import nothing of the orders' reactions.
"""

from __future__ import annotations

from django.dispatch import Signal

payment_completed = Signal()
payment_failed = Signal()
payment_refund_required = Signal()

EVENT_SIGNALS = (payment_completed, payment_failed, payment_refund_required)
