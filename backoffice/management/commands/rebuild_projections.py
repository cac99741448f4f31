from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from kafka.errors import KafkaError

from backoffice.consumer import EventConsumer
from backoffice.projections import projections_reset
from backoffice.services import ProjectionsOfAnotherGroup, projections_group_check
from commerce.management.arguments import seconds, text_not_blank
from outbox.kafka import admin_client


class Command(BaseCommand):
    help = (
        "Empty the projections and the group's inbox, then re-read the topics from the "
        "beginning. Stop the group's live consumers first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--group", type=text_not_blank, default=None)
        parser.add_argument("--until-idle", type=seconds(zero_allowed=True), default=5.0, metavar="SECONDS")

    def handle(self, *args: Any, **options: Any) -> None:
        group = options["group"] or settings.BACKOFFICE_GROUP_ID
        groups = [group]
        try:
            projections_group_check(group)
        except ProjectionsOfAnotherGroup as exc:
            groups.append(exc.group)  # the projections' group until now: stopped too
        for name in groups:
            members = _live_members(name)
            if members:
                # A live member keeps applying into the projections being emptied, and holds
                # the partitions it is assigned: the rebuild replayed the others only.
                raise CommandError(
                    f"group {name} has {len(members)} live member(s) ({', '.join(members)}): stop its "
                    "consumers first (make stop, or the consume_events processes), then rebuild"
                )
        projections_reset(group=group)
        self.stdout.write(f"projections and inbox emptied; replaying as group {group}")
        consumer = EventConsumer(
            topics=list(settings.KAFKA_TOPICS.values()), group_id=group, seek_to_beginning_on_assign=True
        )
        consumer.install_signal_handlers()
        try:
            stats = consumer.run(until_idle_s=options["until_idle"], on_progress=self.stdout.write)
        finally:
            consumer.close()
        self.stdout.write(
            f"replayed {stats.polled} records: applied {stats.applied}, dead letters {stats.dead_lettered}"
        )


def _live_members(group: str) -> list[str]:
    """The group's members now (their client ids), as the group's coordinator sees them."""
    try:
        admin = admin_client()
        try:
            described = admin.describe_groups([group])[group]
        finally:
            admin.close()
    except KafkaError as exc:
        raise CommandError(f"cannot ask Kafka about group {group}: {type(exc).__name__}: {exc}") from exc
    return [f"{member['client_id']} on {member['client_host']}" for member in described["members"]]
