from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce.management.arguments import INT32_MAX, integer_between
from outbox.topics import TopicsNotReady, topic_names, topics_ensure


class Command(BaseCommand):
    help = (
        "Create the event topics and their .dlq topics if missing (idempotent), replicated "
        "per KAFKA_REPLICATION_FACTOR / KAFKA_MIN_INSYNC_REPLICAS; existing topics that "
        "differ are reported on stderr, not changed. Returns once every partition of the topics it "
        "created has a leader."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--partitions", type=integer_between(1, INT32_MAX), default=None)

    def handle(self, *args: Any, partitions: int | None = None, **options: Any) -> None:
        try:
            report = topics_ensure(partitions=partitions)
        except TopicsNotReady as exc:
            raise CommandError(f"topics created but not usable: {exc}") from exc
        for name in topic_names():
            self.stdout.write(f"{name}: {'created' if name in report.created else 'exists'}")
        for mismatch in report.mismatches:
            self.stderr.write(f"mismatch: {mismatch}")
