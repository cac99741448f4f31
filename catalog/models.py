from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class Product(models.Model):
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(0)])
    stock = models.PositiveIntegerField(default=0)
    # Increases by one on every stock change; consumers keep the stock of the highest version.
    stock_version = models.PositiveIntegerField(default=0)
    # The product's sequence number over all its ordered events (LikeChanged, StockChanged), bumped
    # under its row lock in the event's transaction: the events' `aggregate_version`.
    # ProductViewed leaves it alone: views commute, and a lock would serialize every read.
    version = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(stock__gte=0), name="product_stock_not_negative"),
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name

    def version_bump(self) -> int:
        """The next `aggregate_version`; the caller holds the row lock and saves `version`."""
        self.version += 1
        return self.version


class Like(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="likes")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="likes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "product"], name="like_once_per_user")]

    def __str__(self) -> str:
        return f"{self.user_id} likes {self.product_id}"


class ProductView(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="views")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="product_views"
    )
    viewed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"view of {self.product_id} by {self.user_id or 'anonymous'}"
