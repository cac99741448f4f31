from __future__ import annotations

from django.apps import AppConfig


class CommerceConfig(AppConfig):
    name = "commerce"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from commerce import checks  # noqa: F401 - registers the system checks
