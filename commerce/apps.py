"""The project-wide app: commands (simulate_traffic), the pipeline dashboard, system checks,
observability."""

from __future__ import annotations

from django.apps import AppConfig


class CommerceConfig(AppConfig):
    name = "commerce"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from commerce import checks  # noqa: F401 - registers the system checks

        # Every process that sets Django up (API, worker, consume_events, commands) traces per
        # OTEL_TRACES_EXPORTER; here, because the Django instrumentation must add its
        # middleware before the WSGI handler reads MIDDLEWARE.
        from commerce.observability.telemetry import telemetry_setup_from_settings

        telemetry_setup_from_settings()
