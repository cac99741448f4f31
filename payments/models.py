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

    class CardType(models.TextChoices):
        VISA = "VISA"
        MASTERCARD = "MASTERCARD"
        AMEX = "AMEX"

    transaction_key = models.CharField(max_length=64, unique=True, default=transaction_key_new,
                                       editable=False)
    order = models.ForeignKey("orders.Order", on_delete=models.PROTECT, related_name="payments")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    card_type = models.CharField(max_length=20, choices=CardType.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "finished_at"], name="payment_status_idx")]

    def __str__(self) -> str:
        return self.transaction_key
