from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from orders.models import Order


def order_list(*, user: User) -> QuerySet[Order]:
    return Order.objects.filter(user=user).prefetch_related("lines").order_by("-id")


def order_get(*, user: User, order_id: int) -> Order:
    """The user's own order; someone else's raises Order.DoesNotExist (a 404, not a 403)."""
    return Order.objects.prefetch_related("lines").get(id=order_id, user=user)
