from __future__ import annotations

from django.core.management.base import BaseCommand

from outbox.topics import topic_names, topics_ensure


class Command(BaseCommand):
    help = "Create the event topics and their .dlq topics if missing (idempotent)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--partitions", type=int, default=None)

    def handle(self, *args, partitions: int | None = None, **options) -> None:  # noqa: ANN002, ANN003
        created = topics_ensure(partitions=partitions)
        for name in topic_names():
            self.stdout.write(f"{name}: {'created' if name in created else 'exists'}")
