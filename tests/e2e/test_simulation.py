"""The whole pipeline at small scale, as `make demo` runs it: HTTP traffic through a live server,
a real Celery worker (relay, gateway, reactions), a real consume_events, the real broker; then
the consistency check must find no difference."""

from __future__ import annotations

import json
import sys
import uuid

import pytest
from django.core.management import call_command

from catalog.services import product_create
from tests.support.processes import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pipeline(live_server, settings, subprocess_env, tmp_path):
    """The stack of `make run` around the live server: worker and back-office consumer."""
    from decimal import Decimal

    settings.OUTBOX_KICK_ENABLED = True
    settings.OUTBOX_WAKEUP = "celery"  # this stack has no relay loop: the worker relays on kicks
    settings.BACKOFFICE_GROUP_ID = f"e2e-{uuid.uuid4().hex[:6]}"
    for n in range(8):
        product_create(name=f"Simulated {n}", price=Decimal("9.99"), stock=1000)
    env = dict(
        subprocess_env,
        PAYMENT_CALLBACK_BASE_URL=live_server.url,
        PAYMENT_SIM_FAILURE_RATE="0.3",
        PAYMENT_SIM_DELAY="0.1",
        OUTBOX_KICK_ENABLED="1",
        OUTBOX_WAKEUP="celery",
        BACKOFFICE_GROUP_ID=settings.BACKOFFICE_GROUP_ID,
    )
    worker = ManagedProcess(
        name="worker",
        env=env,
        log_path=tmp_path / "worker.log",
        ready_text="ready.",
        argv=[
            sys.executable,
            "-m",
            "celery",
            "-A",
            "commerce",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--purge",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
    )
    consumer = ManagedProcess(
        name="consumer",
        env=env,
        log_path=tmp_path / "consumer.log",
        ready_text="consuming",
        argv=[sys.executable, "manage.py", "consume_events", "--batch-size", "100"],
    )
    worker.start()
    consumer.start()
    yield live_server
    worker.stop()
    consumer.stop()


def test_simulated_traffic_ends_consistent_with_latency_figures(pipeline, capsys):
    # when shoppers drive the API and the pipeline drains
    try:
        call_command(
            "simulate_traffic",
            "--base-url",
            pipeline.url,
            "--actions",
            "120",
            "--users",
            "3",
            "--drain-timeout",
            "120",
            "--json",
        )
        exit_code: int | str | None = 0
    except SystemExit as exc:
        exit_code = exc.code
    output = capsys.readouterr().out
    report = json.loads(output.strip().splitlines()[-1])
    # then every fact of the source tables is in the projections, and latencies were measured
    assert exit_code == 0, output[-3000:]
    assert report["differences"] == []
    assert report["drained"] is True
    assert report["server_errors"] == 0
    assert report["events_recorded"] > 100
    assert report["events_published"] == report["events_recorded"] == report["events_consumed"]
    assert report["actions_by_kind"].get("pay", 0) > 0
    assert all(report["latency_ms"][p] is not None for p in ("p50", "p95", "p99"))
