"""The fault campaign at CI scale: every kind of fault once, then not one difference."""

from __future__ import annotations

import json
import subprocess

import pytest
from django.core.management import call_command
from django.db import connection

from tests.fault.campaign import FAULT_KINDS, fault_schedule, run_campaign
from tests.fault.faults import postgres_cluster_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.relay_clients,
    pytest.mark.fault,
    pytest.mark.django_db(transaction=True),
]


def test_the_same_seed_gives_the_same_schedule():
    first = fault_schedule(seed=11, faults=10, duration_s=60, kinds=FAULT_KINDS)
    assert first == fault_schedule(seed=11, faults=10, duration_s=60, kinds=FAULT_KINDS)
    assert first != fault_schedule(seed=12, faults=10, duration_s=60, kinds=FAULT_KINDS)
    assert {kind for _, kind in first} == set(FAULT_KINDS)


def test_postgres_restart_targets_the_cluster_of_the_database_url(subprocess_env):
    if connection.vendor != "postgresql":
        pytest.fail("run with DATABASE_URL=postgres://...")
    # the cluster listening on the URL's port, not the first one the machine lists
    version, name = postgres_cluster_for(subprocess_env["DATABASE_URL"])
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    ports = {(line.split()[0], line.split()[1]): line.split()[2] for line in listing.splitlines()}
    assert ports[(version, name)] == str(connection.settings_dict["PORT"] or 5432)
    with pytest.raises(ValueError, match="no PostgreSQL cluster"):
        postgres_cluster_for("postgres://u:p@127.0.0.1:1/x")
    with pytest.raises(ValueError, match="not on this machine"):
        postgres_cluster_for("postgres://u:p@db.example.internal:5432/x")


def test_campaign_with_every_fault_kind_ends_with_no_difference(kafka_topics, subprocess_env, settings, tmp_path):
    if connection.vendor != "postgresql":
        pytest.fail("the campaign restarts PostgreSQL: run with DATABASE_URL=postgres://...")
    settings.BACKOFFICE_GROUP_ID = subprocess_env["BACKOFFICE_GROUP_ID"] = "campaign"
    call_command("seed_demo", "--stock", "100000")
    faults = len(FAULT_KINDS)
    report = run_campaign(
        seed=20261124, actions=600, faults=faults, env=subprocess_env, log_dir=tmp_path, topics=kafka_topics, rate=40.0
    )
    result = report.as_json()
    print(json.dumps(result))
    assert result["faults"] == faults
    assert set(result["faults_by_kind"]) == set(FAULT_KINDS)
    assert result["drained"] is True, report.simulation
    assert result["differences"] == 0, report.simulation.get("differences")
    # every poison record is one dead letter, and nothing else is
    assert result["poison_injected"] > 0
    assert result["dead_letters"] == result["poison_injected"]
    assert result["events"] > 400
