"""Permissions for operations that are not edits of a model (the admin and the staff API)."""

from __future__ import annotations

from django.db import models


class Operation(models.Model):  # noqa: DJ008 - no table and no rows: there is nothing to name
    """No table: it only carries the custom permissions of operator actions.

    `commerce.outbox_requeue` (dead outbox rows back to pending) and `commerce.deadletter_redrive`
    (dead letters handled again) re-send events: "change" on the model would be too broad.
    `commerce.payment_review_settle` records a person's word on money (a payment under review
    captured or not), which no edit of a payment may do.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("outbox_requeue", "Can requeue dead outbox rows"),
            ("deadletter_redrive", "Can redrive dead letters"),
            ("payment_review_settle", "Can settle a payment under review"),
        ]
