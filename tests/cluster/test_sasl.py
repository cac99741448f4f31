"""What a managed Kafka asks for, proven on the local cluster's SASL_PLAINTEXT listener (mechanism
PLAIN): the relay's producer and the back office's consumer take the KAFKA_SECURITY_* and
KAFKA_SASL_* settings from the environment, as they are, and a wrong password delivers nothing."""

from __future__ import annotations

import sys

import pytest

from backoffice.models import InboxEntry
from outbox.models import OutboxEvent
from tests.backoffice.stream import produce, projections_differences, stream_make
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.kafka import kafka_read_all
from tests.support.processes import ManagedProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.relay_clients,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
]

SASL = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "PLAIN",
    "sasl_plain_username": "commerce",
    "sasl_plain_password": "commerce-secret",
}


def _sasl_env(cluster_env: dict[str, str], cluster, *, password: str) -> dict[str, str]:
    return dict(
        cluster_env,
        KAFKA_BOOTSTRAP_SERVERS=",".join(cluster.sasl_bootstrap_list),
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME="commerce",
        KAFKA_SASL_PASSWORD=password,
    )


def _run(name: str, env: dict[str, str], tmp_path, *argv: str) -> ManagedProcess:
    process = ManagedProcess(
        name=name, env=env, log_path=tmp_path / f"{name}.log", argv=[sys.executable, "manage.py", *argv]
    )
    process.start()
    process.wait(timeout=120)
    return process


def test_relay_and_consumer_authenticate_with_sasl_plain_from_the_environment(
    cluster, cluster_topics, cluster_env, settings, tmp_path
):
    topic = cluster_topics["catalog-events"]
    # given 200 pending rows, when a relay process drains them through the SASL listener
    outbox_rows_bulk(topic=topic, keys=10, per_key=20)
    relay = _run(
        "relay-sasl",
        _sasl_env(cluster_env, cluster, password="commerce-secret"),
        tmp_path,
        "outbox",
        "drain",
        "--until-empty",
    )
    # then they are all published
    assert relay.popen is not None
    assert relay.popen.returncode == 0, relay.log_tail()
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED).count() == 200, relay.log_tail()
    # and a reader and a producer of this process pass the same settings through
    plaintext = settings.KAFKA_BOOTSTRAP_SERVERS, settings.KAFKA_SECURITY
    settings.KAFKA_BOOTSTRAP_SERVERS, settings.KAFKA_SECURITY = list(cluster.sasl_bootstrap_list), SASL
    try:
        assert len(kafka_read_all(topic, expected=200)) == 200
        records, expected = stream_make(events=300, seed=4)
        produce(records, cluster_topics)
    finally:
        settings.KAFKA_BOOTSTRAP_SERVERS, settings.KAFKA_SECURITY = plaintext

    # when consume_events reads that stream through SASL
    consumer = _run(
        "consumer-sasl",
        _sasl_env(cluster_env, cluster, password="commerce-secret"),
        tmp_path,
        "consume_events",
        "--group",
        "sasl-group",
        "--until-idle",
        "3",
    )
    # then the projections are those of the stream
    assert consumer.popen is not None
    assert consumer.popen.returncode == 0, consumer.log_tail()
    assert InboxEntry.objects.filter(consumer_group="sasl-group").count() == len(records)
    assert projections_differences(expected) == []


def test_a_wrong_sasl_password_publishes_nothing_and_records_the_failure(
    cluster, cluster_topics, cluster_env, tmp_path
):
    outbox_rows_bulk(topic=cluster_topics["catalog-events"], keys=5, per_key=4)
    _run(
        "relay-bad-password",
        _sasl_env(cluster_env, cluster, password="not-the-password"),
        tmp_path,
        "outbox",
        "drain",
        "--until-empty",
    )
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.PUBLISHED).count() == 0
    failed = list(OutboxEvent.objects.filter(attempts__gte=1))
    assert failed
    assert all(row.status == OutboxEvent.Status.PENDING and row.last_error for row in failed)
