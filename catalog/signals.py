"""Catalog signals, sent inside the service's transaction with `event=<catalog.events.*>`."""

from __future__ import annotations

from django.dispatch import Signal

like_changed = Signal()
product_viewed = Signal()
stock_changed = Signal()

EVENT_SIGNALS = (like_changed, product_viewed, stock_changed)
