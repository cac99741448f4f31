"""Catalog use cases. Each is one transaction that locks the product it changes, so that the
events of one product are recorded in the order their transactions commit."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.db import transaction

from catalog.errors import InsufficientStock
from catalog.events import LikeChanged, ProductViewed, StockChanged
from catalog.models import Like, Product, ProductView
from catalog.signals import like_changed, product_viewed, stock_changed
from commerce.errors import DomainValidationError

# The most stock a product holds: its column on PostgreSQL is an integer, and StockChanged's
# `quantity` is one. More was a 500 in development (the schema check) and, in production, a
# committed stock the back office dead-lettered, its projection wrong for good.
STOCK_MAX = 2**31 - 1


def _cached_detail_forget(product_id: int) -> None:
    """The product's cached API detail is deleted once the change commits (deleted before, a
    read in between would cache the old state again)."""
    key = settings.PRODUCT_CACHE_KEY.format(product_id=product_id)
    transaction.on_commit(lambda: cache.delete(key))


def _stock_change(*, product: Product, delta: int, reason: str, order_id: int | None = None) -> None:
    """Apply a stock change to a product the caller has locked, and send StockChanged."""
    if product.stock + delta < 0:
        raise InsufficientStock(
            f"only {product.stock} of product {product.id} in stock",
            product_id=product.id,
            available=product.stock,
            requested=-delta,
        )
    if product.stock + delta > STOCK_MAX:
        raise DomainValidationError(
            f"product {product.id} would hold {product.stock + delta} units, more than {STOCK_MAX}", field="quantity"
        )
    product.stock += delta
    product.stock_version += 1
    aggregate_version = product.version_bump()
    product.save(update_fields=["stock", "stock_version", "version", "updated_at"])
    stock_changed.send(
        sender=Product,
        event=StockChanged(
            product_id=str(product.id),
            quantity=product.stock,
            version=product.stock_version,
            delta=delta,
            reason=reason,
            order_id=str(order_id) if order_id is not None else None,
            aggregate_version=aggregate_version,
        ),
    )


def _like_changed(*, product: Product, user: User, liked: bool) -> None:
    """Send LikeChanged with the product's next version; the caller holds the product's lock."""
    aggregate_version = product.version_bump()
    product.save(update_fields=["version"])
    like_changed.send(
        sender=Like,
        event=LikeChanged(
            product_id=str(product.id), user_id=str(user.pk), liked=liked, aggregate_version=aggregate_version
        ),
    )


def product_create(*, name: str, price: Decimal, stock: int) -> Product:
    """Create a product; its initial stock is the first StockChanged (version 1).

    Raises DomainValidationError (400: stock) for a stock below 0 or above STOCK_MAX."""
    if not 0 <= stock <= STOCK_MAX:
        raise DomainValidationError(f"must be 0 to {STOCK_MAX}", field="stock")
    with transaction.atomic():
        product = Product.objects.create(name=name, price=price, stock=0, stock_version=0)
        _stock_change(product=product, delta=stock, reason="create")
    return product


def product_restock(*, product_id: int, quantity: int) -> Product:
    if quantity < 1:
        raise ValueError("restock quantity must be at least 1")
    with transaction.atomic():
        product = Product.objects.select_for_update().get(id=product_id)
        _stock_change(product=product, delta=quantity, reason="restock")
        # Back in stock is shown at once (the cached detail would say 0 for minutes).
        _cached_detail_forget(product.id)
    return product


def product_update(*, product_id: int, name: str, price: Decimal) -> Product:
    """Change a product's name and price (no event: the catalog's events are about stock,
    likes and views); its cached detail is deleted at commit."""
    with transaction.atomic():
        product = Product.objects.select_for_update().get(id=product_id)
        product.name, product.price = name, price
        product.save(update_fields=["name", "price", "updated_at"])
        _cached_detail_forget(product.id)
    return product


def product_stock_reserve(*, product: Product, quantity: int, order_id: int) -> None:
    """Take units for an order. The caller holds the product's row lock (orders.services)."""
    _stock_change(product=product, delta=-quantity, reason="reserve", order_id=order_id)


def product_stock_restore(*, product: Product, quantity: int, order_id: int) -> None:
    """Give back units of a cancelled order. The caller holds the product's row lock."""
    _stock_change(product=product, delta=quantity, reason="restore", order_id=order_id)
    _cached_detail_forget(product.id)  # back in stock from 0 is shown at once, as after a restock


def product_like(*, user: User, product_id: int) -> bool:
    """Like a product. Liking twice is one like: returns False and emits nothing the second time."""
    with transaction.atomic():
        product = Product.objects.select_for_update().get(id=product_id)
        _, created = Like.objects.get_or_create(user=user, product=product)
        if created:
            _like_changed(product=product, user=user, liked=True)
    return created


def product_unlike(*, user: User, product_id: int) -> bool:
    """Remove a like. Unliking what is not liked returns False and emits nothing."""
    with transaction.atomic():
        product = Product.objects.select_for_update().get(id=product_id)
        deleted, _ = Like.objects.filter(user=user, product=product).delete()
        if deleted:
            _like_changed(product=product, user=user, liked=False)
    return bool(deleted)


def product_view_record(*, user: User | AnonymousUser | None, product_id: int) -> ProductView:
    """Record one read of a product's detail.

    No product lock and no `aggregate_version` (None): views only ever add one, so their order
    per product does not matter, and a lock would serialize every read of a popular product.
    """
    viewer = user if user is not None and user.is_authenticated else None
    with transaction.atomic():
        product = Product.objects.get(id=product_id)
        view = ProductView.objects.create(product=product, user=viewer)
        product_viewed.send(
            sender=ProductView,
            event=ProductViewed(product_id=str(product.id), user_id=str(viewer.pk) if viewer else None),
        )
    return view
