from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def transaction_key_new() -> str:
    return f"txn_{secrets.token_hex(12)}"


class Payment(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"
        COMPLETED = "COMPLETED"
        FAILED = "FAILED"
        # Captured by the gateway for an order that could no longer be paid (cancelled, or paid
        # by another payment): the money is ours and must go back (PaymentRefundRequired).
        REFUND_DUE = "REFUND_DUE"
        # The gateway still says "processing" past PAYMENT_REVIEW_AFTER (or could not be asked):
        # a person decides; a later answer of the gateway still settles it.
        NEEDS_REVIEW = "NEEDS_REVIEW"

    class CardType(models.TextChoices):
        VISA = "VISA"
        MASTERCARD = "MASTERCARD"
        AMEX = "AMEX"

    # A payment in these states may hold or become captured money: no second payment of the order.
    OPEN_OR_CAPTURED = (Status.PENDING, Status.NEEDS_REVIEW, Status.COMPLETED)
    # The gateway has not answered yet.
    UNSETTLED = (Status.PENDING, Status.NEEDS_REVIEW)

    transaction_key = models.CharField(max_length=64, unique=True, default=transaction_key_new, editable=False)
    order = models.ForeignKey("orders.Order", on_delete=models.PROTECT, related_name="payments")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    card_type = models.CharField(max_length=20, choices=CardType.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.CharField(max_length=200, blank=True, default="")
    refund_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "finished_at"], name="payment_status_idx")]

    def __str__(self) -> str:
        return self.transaction_key


class RefundDuePayment(Payment):
    """The admin's list of captured payments that must be refunded (status REFUND_DUE)."""

    class Meta:
        proxy = True
        verbose_name = "refund due"
        verbose_name_plural = "refunds due"


class CallbackReceipt(models.Model):
    """A gateway callback's event id, stored with the change it made: a replay is refused.

    Kept for longer than PAYMENT_CALLBACK_TOLERANCE: an older callback is refused by its
    timestamp already, so older receipts are purged by the reconciliation.
    """

    event_id = models.CharField(max_length=100, unique=True)
    transaction_key = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return self.event_id


class SimulatedCharge(models.Model):
    """The simulated gateway's own book of the charges it was asked for (payments.simulator).

    It lets the simulator answer a status lookup truthfully: never seen, still processing, or
    the outcome it decided. A real gateway keeps this on its side.
    """

    class Status(models.TextChoices):
        PROCESSING = "PROCESSING"
        COMPLETED = "COMPLETED"
        FAILED = "FAILED"

    transaction_key = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROCESSING)
    reason = models.CharField(max_length=200, blank=True, default="")
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.transaction_key} {self.status}"
