"""Celery tasks of orders: thin, they take ids and call a service."""

from __future__ import annotations

import logging

from celery import shared_task

from orders import services

logger = logging.getLogger(__name__)


@shared_task(
    name="orders.follow_payment", autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=60, max_retries=10
)
def order_follow_payment(payment_id: int) -> None:
    services.order_follow_payment(payment_id=payment_id)


@shared_task(name="orders.follow_lost_payments")
def follow_lost_payments() -> dict[str, int]:
    repaired = services.order_payments_follow_lost()
    if repaired:
        logger.info("orders followed lost payment reactions", extra={"orders_repaired": repaired})
    return {"orders_repaired": repaired}


@shared_task(name="orders.expire_unpaid")
def expire_unpaid() -> dict[str, int]:
    expired = services.orders_expire_unpaid()
    if expired:
        logger.info("unpaid orders expired", extra={"orders_expired": expired})
    return {"orders_expired": expired}
