from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.models import DeadLetter
from backoffice.services import dead_letters_redrive
from commerce.management.arguments import INT64_MAX, integer_between


class Command(BaseCommand):
    help = "Dead letters: `list` the open ones, `redrive` them (by id, or --all) after a fix."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        redrive = sub.add_parser("redrive")
        redrive.add_argument("ids", nargs="*", type=integer_between(1, INT64_MAX))
        redrive.add_argument("--all", action="store_true")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "list":
            for letter in DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).order_by("id"):
                self.stdout.write(f"{letter.id}\t{letter.topic}[{letter.partition}]@{letter.offset}\t{letter.error}")
            return
        if not options["ids"] and not options["all"]:
            raise CommandError("name dead letter ids, or pass --all")
        if options["ids"]:
            # Checked before any is redriven: a mistyped id redrives nothing rather than the rest.
            found = set(DeadLetter.objects.filter(id__in=options["ids"]).values_list("id", flat=True))
            missing = sorted(set(options["ids"]) - found)
            if missing:
                raise CommandError(f"no dead letter with id {', '.join(map(str, missing))}")
        result = dead_letters_redrive(ids=options["ids"] or None)
        self.stdout.write(f"redriven {result.redriven}, still failing {result.still_failing}")
