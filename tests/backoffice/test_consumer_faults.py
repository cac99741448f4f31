"""The consumer survives its database going away mid-stream, and loses or doubles nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import connection

from backoffice.models import InboxEntry
from tests.backoffice.stream import produce, projections_differences, stream_make
from tests.support.processes import consume_events_managed

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.django_db(transaction=True)]


def _refuse_connections(database: str, seconds: float) -> None:
    """The database refuses every new connection and drops the open ones for a while.

    Done from a connection to another database (PostgreSQL refuses to lock out the current one).
    """
    import psycopg

    params = connection.get_connection_params()
    params["dbname"] = "postgres"
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [database],
                )
                time.sleep(0.2)
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    connection.close()  # ours was dropped too


def test_database_unavailable_mid_stream_the_consumer_survives_and_counts_exactly(
    kafka_topics, subprocess_env, tmp_path
):
    if connection.vendor != "postgresql":
        pytest.fail("this fault is injected on PostgreSQL: run with DATABASE_URL=postgres://...")
    records, expected = stream_make(events=3000, seed=21)
    produce(records, kafka_topics)
    consumer = consume_events_managed(
        name="consumer", env=subprocess_env, log_path=tmp_path / "consumer.log", group=f"g-{uuid.uuid4().hex[:6]}"
    )
    consumer.start()
    deadline = time.monotonic() + 60
    while InboxEntry.objects.count() < 300 and time.monotonic() < deadline:
        time.sleep(0.1)
    # when the database goes away for a few seconds
    _refuse_connections(connection.settings_dict["NAME"], seconds=4)
    # then the consumer is still alive, and catches up exactly
    assert consumer.running, consumer.log_tail()
    deadline = time.monotonic() + 120
    while InboxEntry.objects.count() < len(records) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert consumer.running
    assert consumer.stop() == 0, consumer.log_tail()
    assert "batch not applied, retrying" in consumer.log_path.read_text()
    assert InboxEntry.objects.count() == len(records)
    assert projections_differences(expected) == []
