from __future__ import annotations

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "catalog"

    def ready(self) -> None:
        from catalog.signals import EVENT_SIGNALS
        from outbox.receivers import outbox_connect

        outbox_connect(EVENT_SIGNALS)
