"""The fault campaign at CI scale: every kind of fault once, then not one difference."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.db import connection

from tests.fault.campaign import FAULT_KINDS, fault_schedule, run_campaign

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.django_db(transaction=True)]


def test_the_same_seed_gives_the_same_schedule():
    first = fault_schedule(seed=11, faults=6, duration_s=60, kinds=FAULT_KINDS)
    assert first == fault_schedule(seed=11, faults=6, duration_s=60, kinds=FAULT_KINDS)
    assert first != fault_schedule(seed=12, faults=6, duration_s=60, kinds=FAULT_KINDS)
    assert {kind for _, kind in first} == set(FAULT_KINDS)


def test_campaign_with_every_fault_kind_ends_with_no_difference(kafka_topics, subprocess_env, settings, tmp_path):
    if connection.vendor != "postgresql":
        pytest.fail("the campaign restarts PostgreSQL: run with DATABASE_URL=postgres://...")
    settings.BACKOFFICE_GROUP_ID = subprocess_env["BACKOFFICE_GROUP_ID"] = "campaign"
    call_command("seed_demo", "--stock", "100000")
    report = run_campaign(seed=20261124, actions=300, faults=4, env=subprocess_env, log_dir=tmp_path,
                          topics=kafka_topics, rate=40.0)
    result = report.as_json()
    print(json.dumps(result))
    assert result["faults"] == 4 and set(result["faults_by_kind"]) == set(FAULT_KINDS)
    assert result["drained"] is True, report.simulation
    assert result["differences"] == 0, report.simulation.get("differences")
    assert result["events"] > 200
