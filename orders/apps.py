from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "orders"

    def ready(self) -> None:
        from orders.receivers import follow_payment_on_commit
        from orders.signals import EVENT_SIGNALS
        from outbox.receivers import outbox_connect
        from payments.signals import payment_completed, payment_failed

        outbox_connect(EVENT_SIGNALS)
        payment_completed.connect(follow_payment_on_commit, dispatch_uid="orders.follow_completed")
        payment_failed.connect(follow_payment_on_commit, dispatch_uid="orders.follow_failed")
