"""The Celery app: configuration from Django settings (`CELERY_*`), tasks autodiscovered.

Two queues: domain reactions on CELERY_TASK_DEFAULT_QUEUE, relay drains (the on-commit kicks and
beat's safety-net drain) on OUTBOX_CELERY_QUEUE. A worker started without `-Q` consumes both;
`make run` gives each its own worker, so that a burst of kicks never delays an order following
its payment.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# `filesystem://` (make run's default broker) means the multi-process-safe version of kombu's.
TRANSPORT_ALIASES["filesystem"] = "commerce.filequeue:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "commerce.settings")

app = Celery("commerce")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

RELAY_TASKS = ("outbox.relay_drain",)


def route_task(
    name: str, args: object, kwargs: object, options: object, task: object = None, **kw: object
) -> dict[str, str] | None:
    from django.conf import settings

    if name in RELAY_TASKS:
        return {"queue": settings.OUTBOX_CELERY_QUEUE}
    return None


@app.on_after_configure.connect
def _queues(sender: Celery, **kwargs: object) -> None:
    from django.conf import settings
    from kombu import Queue

    sender.conf.task_routes = (route_task,)
    if not sender.conf.task_queues:
        sender.conf.task_queues = (
            Queue(settings.CELERY_TASK_DEFAULT_QUEUE, routing_key=settings.CELERY_TASK_DEFAULT_QUEUE),
            Queue(settings.OUTBOX_CELERY_QUEUE, routing_key=settings.OUTBOX_CELERY_QUEUE),
        )


# Worker-process hooks of the metrics exporter (commerce/observability/worker.py).
import commerce.observability.worker  # noqa: E402,F401 - for its signal hooks, once the app is set up
