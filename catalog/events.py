"""Events of the catalog, published on catalog-events keyed by product id (docs/EVENTS.md)."""

from __future__ import annotations

import dataclasses

from outbox.envelope import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProductEvent(DomainEvent):
    stream = "catalog-events"
    aggregate_type = "product"
    aggregate_field = "product_id"

    product_id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class LikeChanged(ProductEvent):
    user_id: str
    liked: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProductViewed(ProductEvent):
    user_id: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StockChanged(ProductEvent):
    quantity: int
    version: int
    delta: int
    reason: str  # create | reserve | restore | restock
    order_id: str | None = None
