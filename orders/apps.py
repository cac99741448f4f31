from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "orders"

    def ready(self) -> None:
        from orders.signals import EVENT_SIGNALS
        from outbox.receivers import outbox_connect

        outbox_connect(EVENT_SIGNALS)
