"""`manage.py backoffice_health`: the consumer group's lag and last progress; exit 1 when unhealthy."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand

from commerce.health import backoffice_health


class Command(BaseCommand):
    help = "The back office's consumer lag and last progress, as JSON; exit 1 when unhealthy."

    def handle(self, *args: Any, **options: Any) -> None:
        health = backoffice_health()
        self.stdout.write(json.dumps(health, indent=2, default=str))
        if health["status"] != "ok":
            sys.exit(1)
