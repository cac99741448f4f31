from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.consumer import EventConsumer
from backoffice.services import ProjectionsOfAnotherGroup, projections_group_check
from commerce.management.arguments import (
    INT32_MAX,
    INT64_MAX,
    integer_between,
    seconds,
    text_not_blank,
    topic_name,
)
from commerce.observability.exporters import metrics_http_start

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Consume the event topics into the back-office projections, effectively once. "
        "SIGTERM/SIGINT finish the current batch, commit and exit 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--topics", nargs="+", type=topic_name, default=None, help="default: every topic of KAFKA_TOPICS"
        )
        parser.add_argument("--group", type=text_not_blank, default=None, help="default: BACKOFFICE_GROUP_ID")
        parser.add_argument(
            "--batch-size", type=integer_between(1, INT32_MAX), default=None, help="default: BACKOFFICE_BATCH_SIZE"
        )
        # Both default to None, not True: argparse counts an exclusive flag as given only when it
        # stores a value other than its default. None (neither given) means from the beginning.
        start = parser.add_mutually_exclusive_group()
        start.add_argument(
            "--from-beginning",
            action="store_true",
            default=None,
            help="a new group starts at the oldest record (default)",
        )
        start.add_argument(
            "--from-latest",
            dest="from_beginning",
            action="store_false",
            default=None,
            help="a new group starts at the end",
        )
        parser.add_argument(
            "--until-idle",
            type=seconds(zero_allowed=True),
            default=None,
            metavar="SECONDS",
            help="exit after this long without a record (counted once each partition answered a fetch)",
        )
        parser.add_argument(
            "--max-events", type=integer_between(1, INT64_MAX), default=None, help="exit after N records"
        )
        parser.add_argument("--progress-every", type=seconds(zero_allowed=False), default=10.0, metavar="SECONDS")

    def handle(self, *args: Any, **options: Any) -> None:
        group = options["group"] or settings.BACKOFFICE_GROUP_ID
        if group != settings.BACKOFFICE_GROUP_ID:
            # A group named on the command line: the projections may be another's. The
            # configured group is never refused: `make run` after its checkout moved has a new
            # group (and new topics), and must start.
            try:
                projections_group_check(group)
            except ProjectionsOfAnotherGroup as exc:
                raise CommandError(str(exc)) from exc
        consumer = EventConsumer(
            topics=options["topics"] or list(settings.KAFKA_TOPICS.values()),
            group_id=group,
            batch_size=options["batch_size"],
            from_beginning=options["from_beginning"] is not False,
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
