from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.asyncapi import DOCUMENT_PATH, asyncapi_document, asyncapi_yaml
from backoffice.schema_compat import document_changes_incompatible


class Command(BaseCommand):
    help = (
        "Write the AsyncAPI document of the events (docs/asyncapi.yaml) from the contract. "
        "Refuses a change that breaks a committed version (docs/EVENTS.md: make a new version)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="write nothing; exit 1 when the file differs from the contract"
        )
        parser.add_argument("--output", default=str(Path(settings.BASE_DIR) / DOCUMENT_PATH))

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["output"])
        text = asyncapi_yaml()
        try:
            committed = path.read_text() if path.exists() else None
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        if committed is not None:
            breaking = document_changes_incompatible(yaml.safe_load(committed), asyncapi_document())
            if breaking:
                raise CommandError(
                    "incompatible within a version (make a new version, docs/EVENTS.md):\n  " + "\n  ".join(breaking)
                )
        if options["check"]:
            if committed != text:
                raise CommandError(f"{path} differs from the contract: run manage.py asyncapi")
            self.stdout.write(f"{path} is up to date")
            return
        try:
            path.write_text(text)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
        self.stdout.write(f"wrote {path}")
