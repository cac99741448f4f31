from __future__ import annotations

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "payments"

    def ready(self) -> None:
        from outbox.receivers import outbox_connect
        from payments.signals import EVENT_SIGNALS

        outbox_connect(EVENT_SIGNALS)
