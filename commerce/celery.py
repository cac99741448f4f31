"""The Celery app: configuration from Django settings (`CELERY_*`), tasks autodiscovered."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "commerce.settings")

app = Celery("commerce")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Worker-process hooks of the metrics exporter (commerce/observability/worker.py).
import commerce.observability.worker  # noqa: E402,F401
