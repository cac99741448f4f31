"""`manage.py relay_health`: the relay's health for monitoring; exit 1 when unhealthy."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand

from commerce.health import relay_health


class Command(BaseCommand):
    help = "Broker reachability and outbox backlog per topic, as JSON; exit 1 when unhealthy."

    def handle(self, *args: Any, **options: Any) -> None:
        health = relay_health()
        self.stdout.write(json.dumps(health, indent=2))
        if health["status"] != "ok":
            sys.exit(1)
