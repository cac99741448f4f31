"""The simulated gateway (development, tests, demos): it answers through the real signed callback.

It keeps a book of the charges it was asked for (`SimulatedCharge`), so that a status lookup is
answered truthfully: never seen, still processing, or the outcome it decided. The answer is a
Celery task (delay PAYMENT_SIM_DELAY, failure share PAYMENT_SIM_FAILURE_RATE) that POSTs the
signed callback to PAYMENT_CALLBACK_BASE_URL or, when that is empty (tests), hands the same
signed request to the handler the endpoint uses. A system check refuses it outside DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import random
import urllib.error
import urllib.request
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from commerce.errors import DomainError
from payments import services
from payments.gateway import ChargeState, ChargeStatus, callback_body, callback_headers
from payments.models import SimulatedCharge

logger = logging.getLogger(__name__)


class SimulatedGateway:
    def payment_request(self, *, transaction_key: str) -> None:
        SimulatedCharge.objects.get_or_create(transaction_key=transaction_key)
        simulated_gateway_answer.apply_async(args=(transaction_key,), countdown=settings.PAYMENT_SIM_DELAY)

    def payment_status(self, *, transaction_key: str) -> ChargeStatus:
        charge = SimulatedCharge.objects.filter(transaction_key=transaction_key).first()
        if charge is None:
            return ChargeStatus(ChargeState.UNKNOWN)
        due = charge.requested_at + timedelta(seconds=settings.PAYMENT_SIM_DELAY)
        if charge.status == SimulatedCharge.Status.PROCESSING and timezone.now() >= due:
            # The simulated bank decides after PAYMENT_SIM_DELAY whether or not its answer task
            # ran (a killed worker may have lost it), as a real gateway's charge is settled
            # whether or not its callback got through.
            charge = _charge_decide(transaction_key)
        return ChargeStatus(ChargeState(charge.status), charge.reason)


def _charge_decide(transaction_key: str) -> SimulatedCharge:
    """The charge's outcome, decided once (a retried task answers the same)."""
    with transaction.atomic():
        charge, _ = SimulatedCharge.objects.select_for_update().get_or_create(transaction_key=transaction_key)
        if charge.status == SimulatedCharge.Status.PROCESSING:
            failed = random.random() < settings.PAYMENT_SIM_FAILURE_RATE
            charge.status = SimulatedCharge.Status.FAILED if failed else SimulatedCharge.Status.COMPLETED
            charge.reason = "card declined" if failed else ""
            charge.decided_at = timezone.now()
            charge.save(update_fields=["status", "reason", "decided_at"])
    return charge


@shared_task(
    name="payments.simulated_gateway_answer",
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=10,
)
def simulated_gateway_answer(transaction_key: str) -> None:
    charge = _charge_decide(transaction_key)
    body = callback_body(transaction_key=transaction_key, status=charge.status, reason=charge.reason)
    headers = callback_headers(body)
    base_url = settings.PAYMENT_CALLBACK_BASE_URL
    if base_url:
        request = urllib.request.Request(
            f"{base_url.rstrip('/')}/api/payments/callback/",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise OSError(f"callback answered {error.code}") from error
            logger.warning("callback refused", extra={"status": error.code, "transaction_key": transaction_key})
        return
    with contextlib.suppress(DomainError):  # settled another way (reconciliation): nothing to answer
        services.payment_callback_handle(body=body, headers=headers)
