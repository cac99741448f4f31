from __future__ import annotations

from commerce.errors import Conflict


class InsufficientStock(Conflict):
    code = "insufficient_stock"
