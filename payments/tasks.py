"""Celery tasks of payments: thin, they take ids and call a service."""

from __future__ import annotations

import logging
import random
import urllib.error
import urllib.request

from celery import shared_task
from django.conf import settings

from payments import services
from payments.gateway import callback_body, callback_signature

logger = logging.getLogger(__name__)


@shared_task(name="payments.order_follow_payment", autoretry_for=(Exception,),
             retry_backoff=True, retry_backoff_max=60, max_retries=10)
def order_follow_payment(payment_id: int) -> None:
    services.order_follow_payment(payment_id=payment_id)


@shared_task(name="payments.reconcile")
def reconcile() -> dict[str, int]:
    result = services.payment_reconcile()
    if any(result.values()):
        logger.info("payments reconciled", extra=result)
    return result


@shared_task(name="payments.simulated_gateway_answer", autoretry_for=(OSError,),
             retry_backoff=True, retry_backoff_max=30, max_retries=10)
def simulated_gateway_answer(transaction_key: str) -> None:
    failed = random.random() < settings.PAYMENT_SIM_FAILURE_RATE
    body = callback_body(transaction_key=transaction_key,
                         status="FAILED" if failed else "COMPLETED",
                         reason="card declined" if failed else "")
    signature = callback_signature(body)
    base_url = getattr(settings, "PAYMENT_CALLBACK_BASE_URL", "")
    if base_url:
        request = urllib.request.Request(
            f"{base_url.rstrip('/')}/api/payments/callback/", data=body, method="POST",
            headers={"Content-Type": "application/json", "X-Signature": signature})
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise OSError(f"callback answered {error.code}") from error
            logger.warning("callback refused", extra={"status": error.code,
                                                      "transaction_key": transaction_key})
        return
    try:
        services.payment_callback_handle(body=body, signature=signature)
    except services.IllegalTransition:
        pass  # the payment finished another way (reconciliation): nothing to answer
