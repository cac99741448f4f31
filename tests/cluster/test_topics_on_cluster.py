"""ensure_topics on the 3-broker cluster: every topic it creates is replicated for acks=all to
mean two brokers, and topics that already exist with less are reported wherever an operator looks."""

from __future__ import annotations

import json
import uuid
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from tests.factories import user_make
from tests.support.kafka import kafka_topics_delete

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.django_db]


@pytest.fixture
def fresh_names(cluster, settings):
    suffix = uuid.uuid4().hex[:10]
    settings.KAFKA_TOPICS = {"catalog-events": f"policy-{suffix}-catalog", "order-events": f"policy-{suffix}-orders"}
    names = [
        f"policy-{suffix}-catalog",
        f"policy-{suffix}-orders",
        f"policy-{suffix}-catalog.dlq",
        f"policy-{suffix}-orders.dlq",
    ]
    yield names
    kafka_topics_delete(cluster.bootstrap, names)


def test_ensure_topics_creates_every_topic_with_3_replicas_2_in_sync_and_no_unclean_election(cluster, fresh_names):
    out, err = StringIO(), StringIO()
    call_command("ensure_topics", stdout=out, stderr=err)

    assert out.getvalue().split("\n")[:-1] == [f"{name}: created" for name in fresh_names]
    assert err.getvalue() == ""
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_list)
    try:
        described = admin.describe_topics(fresh_names)
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in fresh_names], config_filter="all"
        )["topic"]
    finally:
        admin.close()
    assert {t["name"]: sorted({len(p["replica_nodes"]) for p in t["partitions"]}) for t in described} == {
        name: [3] for name in fresh_names
    }
    status = StringIO()
    call_command("outbox", "status", "--topics", "--json", stdout=status)  # exit 0: no SystemExit
    assert json.loads(status.getvalue())["topic_mismatches"] == []
    assert {
        name: (configs[name]["min.insync.replicas"]["value"], configs[name]["unclean.leader.election.enable"]["value"])
        for name in fresh_names
    } == dict.fromkeys(fresh_names, ("2", "false"))


def test_a_topic_made_with_less_is_reported_by_ensure_topics_outbox_status_and_the_dashboard(
    cluster, fresh_names, client
):
    # given the catalog topic already exists with one replica, one in sync, unclean election on
    weak = fresh_names[0]
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_list)
    try:
        admin.create_topics(
            [NewTopic(weak, 3, 1, topic_configs={"min.insync.replicas": "1", "unclean.leader.election.enable": "true"})]
        )
    finally:
        admin.close()
    expected = [
        f"{weak}: replication factor is 1, expected 3",
        f"{weak}: min.insync.replicas is 1, expected 2",
        f"{weak}: unclean.leader.election.enable is true, expected false",
    ]

    # when ensure_topics runs, then it leaves that topic alone and says how it differs
    out, err = StringIO(), StringIO()
    call_command("ensure_topics", stdout=out, stderr=err)
    assert f"{weak}: exists" in out.getvalue()
    assert err.getvalue().split("\n")[:-1] == [f"mismatch: {line}" for line in expected]

    # and `outbox status --topics` shows it, as text and as JSON, and fails
    status = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("outbox", "status", "--topics", stdout=status, stderr=StringIO())
    assert exited.value.code == 1
    assert [line for line in status.getvalue().split("\n") if line.startswith("topic mismatch")] == [
        f"topic mismatch: {line}" for line in expected
    ]
    as_json = StringIO()
    with pytest.raises(SystemExit):
        call_command("outbox", "status", "--topics", "--json", stdout=as_json, stderr=StringIO())
    assert json.loads(as_json.getvalue())["topic_mismatches"] == expected

    # and so does the admin dashboard
    # (the dashboard needs the outbox's view permission, 3e9f8e9)
    staff = user_make(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_outboxevent"))
    client.force_login(staff)
    page = client.get("/admin/pipeline/").content.decode()
    assert all(line in page for line in expected)
    assert 'id="topic-check-ok"' not in page
