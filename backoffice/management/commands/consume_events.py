from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from backoffice.consumer import EventConsumer
from commerce.observability.exporters import metrics_http_start

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Consume the event topics into the back-office projections, effectively once. "
        "SIGTERM/SIGINT finish the current batch, commit and exit 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topics", nargs="+", default=None, help="default: every topic of KAFKA_TOPICS")
        parser.add_argument("--group", default=None, help="default: BACKOFFICE_GROUP_ID")
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument(
            "--from-beginning",
            action="store_true",
            default=True,
            help="a new group starts at the oldest record (default)",
        )
        parser.add_argument(
            "--from-latest", dest="from_beginning", action="store_false", help="a new group starts at the end"
        )
        parser.add_argument(
            "--until-idle",
            type=float,
            default=None,
            metavar="SECONDS",
            help="exit after this long without a record (counted once each partition answered a fetch)",
        )
        parser.add_argument("--max-events", type=int, default=None, help="exit after N records")
        parser.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS")

    def handle(self, *args: Any, **options: Any) -> None:
        consumer = EventConsumer(
            topics=options["topics"] or list(settings.KAFKA_TOPICS.values()),
            group_id=options["group"] or settings.BACKOFFICE_GROUP_ID,
            batch_size=options["batch_size"],
            from_beginning=options["from_beginning"],
            progress_every_s=options["progress_every"],
        )
        consumer.install_signal_handlers()
        # Prometheus scrapes this process on its own port (0, the default: no exporter).
        metrics_http_start(port=settings.CONSUMER_METRICS_PORT)
        self.stdout.write(f"consuming {consumer.topics} as group {consumer.group_id}")
        self.stdout.flush()
        try:
            stats = consumer.run(until_idle_s=options["until_idle"], max_events=options["max_events"])
        finally:
            consumer.close()
        self.stdout.write(
            f"consumed {stats.polled}: applied {stats.applied}, duplicates "
            f"{stats.duplicates}, dead letters {stats.dead_lettered}, retries {stats.retries}"
        )
