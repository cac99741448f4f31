"""Topic administration: the event topics and their dead-letter topics."""

from __future__ import annotations

import logging

from django.conf import settings
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from outbox.kafka import admin_client

logger = logging.getLogger(__name__)


def topic_names() -> list[str]:
    names = list(settings.KAFKA_TOPICS.values())
    return names + [f"{name}.dlq" for name in names]


def topics_ensure(*, partitions: int | None = None, replication_factor: int | None = None) -> list[str]:
    """Create the missing topics; returns the names created. Idempotent."""
    partitions = partitions or settings.KAFKA_TOPIC_PARTITIONS
    replication_factor = replication_factor or settings.KAFKA_REPLICATION_FACTOR
    admin = admin_client()
    try:
        existing = set(admin.list_topics())
        missing = [name for name in topic_names() if name not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(name, partitions, replication_factor) for name in missing])
            except TopicAlreadyExistsError:
                pass  # created meanwhile by someone else: what we wanted
        return missing
    finally:
        admin.close()
