"""A real Prometheus scrapes a real prefork Celery worker (the relay) while it drains a backlog:
the series exist in Prometheus, the backlog moves to 0, and the project's alert rules load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from django.conf import settings

from commerce.celery import app
from tests.observability.prometheus_server import PrometheusServer, free_port
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.processes import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_prometheus_sees_the_backlog_drained_by_the_worker_and_loads_the_alerts(subprocess_env, tmp_path: Path):
    # given: 20 pending rows on the catalog topic, a prefork worker exporting its metrics, and a
    # Prometheus scraping it every second
    topic = settings.KAFKA_TOPICS["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=4, per_key=5)
    worker_port = free_port()
    worker = ManagedProcess(
        name="celery-worker",
        argv=[
            sys.executable,
            "-m",
            "celery",
            "-A",
            "commerce",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=INFO",
            "--purge",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        env={
            **subprocess_env,
            "WORKER_METRICS_PORT": str(worker_port),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
        },
        log_path=tmp_path / "worker.log",
        ready_text="ready.",
    )
    prometheus = PrometheusServer(
        targets={"commerce-worker": f"127.0.0.1:{worker_port}"}, workdir=tmp_path / "prometheus"
    )
    worker.start(timeout=60)
    prometheus.start()
    try:
        pending = f'outbox_pending_rows{{job="commerce-worker",topic="{topic}"}}'
        published = f'outbox_events_published_total{{job="commerce-worker",topic="{topic}"}}'
        assert prometheus.wait_for(pending, lambda values: values == [20.0])
        assert prometheus.wait_for('up{job="commerce-worker"}', lambda values: values == [1.0])
        # nothing published yet: no series, or one at 0 (a child of the worker made it earlier)
        assert prometheus.values(published) in ([], [0.0])

        # when: the relay drains, in the worker's children
        app.send_task("outbox.relay_drain")

        # then: the backlog returns to 0 in Prometheus, which saw it at 20 before
        assert prometheus.wait_for(pending, lambda values: values == [0.0])
        # and the relay's published counter grew by the 20 rows it drained (summed over the
        # worker's children by the multiprocess collector), as did its heartbeat and batch figures
        assert prometheus.wait_for(published, lambda values: values == [20.0])
        assert prometheus.wait_for(
            'outbox_relay_batch_size_sum{job="commerce-worker"}', lambda values: values == [20.0]
        )
        assert prometheus.values('outbox_relay_last_drain_timestamp_seconds{job="commerce-worker"} > 0') != []
        assert prometheus.values(f"max_over_time({pending}[5m])") == [20.0]
        assert prometheus.values(f'outbox_oldest_pending_age_seconds{{job="commerce-worker",topic="{topic}"}}') == [0.0]
        # and the alert rules are loaded and evaluated by a real Prometheus
        rules = [rule["name"] for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert {"OutboxBacklogTooOld", "RelayDown", "ConsumerLagGrowing", "ConsumerDown"} <= set(rules)
        assert all(rule["health"] == "ok" for group in prometheus.api("rules")["groups"] for rule in group["rules"])
    finally:
        prometheus.stop()
        worker.stop()
