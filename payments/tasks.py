"""Celery tasks of payments: thin, they take ids and call a service."""

from __future__ import annotations

import logging

from celery import shared_task

from payments import services
from payments.simulator import simulated_gateway_answer  # noqa: F401 - registers the simulator's task

logger = logging.getLogger(__name__)


@shared_task(name="payments.reconcile")
def reconcile() -> dict[str, int]:
    result = services.payment_reconcile().as_dict()
    if any(result.values()):
        logger.info("payments reconciled", extra=result)
    return result
