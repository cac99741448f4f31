"""Demo data for `make run`: products, users with API tokens and coupons; a superuser in DEBUG."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from rest_framework.authtoken.models import Token

from catalog.models import Product
from catalog.services import STOCK_MAX, product_create
from commerce.management.arguments import integer_between
from orders.models import Coupon
from orders.services import coupon_create

PRODUCTS = [
    ("Espresso cup", "8.50"),
    ("Pour-over kettle", "39.00"),
    ("Burr grinder", "129.00"),
    ("Coffee beans 1kg", "24.90"),
    ("Milk jug", "14.00"),
    ("Tamper", "19.50"),
    ("Scale", "45.00"),
    ("Filter papers", "5.90"),
    ("Travel mug", "22.00"),
    ("Cold brew bottle", "27.50"),
    ("Moka pot", "34.00"),
    ("French press", "29.00"),
    ("Knock box", "18.00"),
    ("Cleaning tablets", "9.90"),
    ("Latte glass", "7.50"),
    ("Dripper", "16.00"),
    ("Server jug", "21.00"),
    ("Canister", "17.00"),
    ("Barista apron", "32.00"),
    ("Descaler", "11.00"),
]
DEMO_USERS = ["alice", "bob", "carol"]
DEV_ADMIN = ("admin", "admin-dev-only")


class Command(BaseCommand):
    help = "Create demo products, users with tokens and coupons (idempotent); a dev superuser in DEBUG."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stock", type=integer_between(0, STOCK_MAX), default=500)

    def handle(self, *args: Any, stock: int, **options: Any) -> None:
        existing = set(Product.objects.values_list("name", flat=True))
        for name, price in PRODUCTS:
            if name not in existing:
                product_create(name=name, price=Decimal(price), stock=stock)
        user_model = get_user_model()
        for username in DEMO_USERS:
            user, created = user_model.objects.get_or_create(username=username)
            if created:
                user.set_password(f"{username}-dev-only")
                user.save()
            token, _ = Token.objects.get_or_create(user=user)
            for n, (kind, value) in enumerate([(Coupon.Kind.FIXED, "5.00"), (Coupon.Kind.PERCENT, "10")]):
                code = f"{username.upper()}-{n + 1}"
                if not Coupon.objects.filter(code=code).exists():
                    coupon_create(
                        code=code,
                        owner=user,
                        kind=kind,
                        value=Decimal(value),
                        expires_at=timezone.now() + timedelta(days=365),
                    )
            self.stdout.write(f"user {username}: token {token.key}")
        if settings.DEBUG:
            username, password = DEV_ADMIN
            if not user_model.objects.filter(username=username).exists():
                user_model.objects.create_superuser(username=username, password=password, email="")
            self.stdout.write(f"admin (development only): {username} / {password}")
        self.stdout.write(f"{Product.objects.count()} products, {Coupon.objects.count()} coupons")
