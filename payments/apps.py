from __future__ import annotations

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "payments"

    def ready(self) -> None:
        from orders.signals import order_cancelled
        from outbox.receivers import outbox_connect
        from payments.receivers import refund_on_order_cancelled
        from payments.signals import EVENT_SIGNALS

        outbox_connect(EVENT_SIGNALS)
        # After the outbox's receiver of OrderCancelled (the orders app is ready first), so the
        # refund's event follows the cancellation's, with the next version.
        order_cancelled.connect(refund_on_order_cancelled, dispatch_uid="payments.refund_on_cancel")
