"""A prefork worker's metrics: the children's counters summed on one port (multiprocess mode)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PROJECT_DIR
from tests.outbox.events_for_tests import outbox_rows_bulk
from tests.support.processes import ManagedProcess


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FORKED_CHILDREN = textwrap.dedent("""
    import os, sys
    import django
    django.setup()
    from commerce.observability import metrics
    from commerce.observability.exporters import exposition_registry
    from commerce.observability.worker import _child_gone
    from prometheus_client import generate_latest

    # As a prefork pool: children forked from a parent that imported the metrics.
    children = []
    for child in range(2):
        pid = os.fork()
        if pid == 0:
            for _ in range(3):
                metrics.relay_published_observed(topic="t", occurred_at="2026-01-01T00:00:00+00:00")
            metrics.relay_batch_observed(size=3, seconds=0.1)
            metrics.consumer_lag_observed(topic="t", partition=child, lag=10 * (child + 1))
            if child == 1:
                _child_gone(pid=os.getpid())  # what worker_process_shutdown does
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    sys.stdout.write(generate_latest(exposition_registry(database=False)).decode())
""")


def test_the_counters_of_forked_children_are_summed_and_a_gone_childs_live_gauge_dropped(tmp_path):
    # given: a multiprocess directory, as the worker's environment sets it
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DEBUG": "1",
    }
    env.pop("DATABASE_URL", None)
    # when
    done = subprocess.run(
        [sys.executable, "-c", FORKED_CHILDREN],
        env=env,
        cwd=PROJECT_DIR,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then
    assert done.returncode == 0, done.stderr
    samples = _samples(done.stdout)
    assert samples[("outbox_events_published_total", (("topic", "t"),))] == 6
    assert samples[("outbox_relay_batch_size_count", ())] == 2
    lags = {labels: value for (name, labels), value in samples.items() if name == "backoffice_consumer_lag_records"}
    assert lags == {(("partition", "0"), ("topic", "t")): 10}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_prefork_worker_serves_its_metrics_and_the_backlog_on_its_port(subprocess_env, tmp_path: Path):
    # given: a backlog of 4 rows on the catalog topic, and a worker with 2 children
    topic = settings.KAFKA_TOPICS["catalog-events"]
    outbox_rows_bulk(topic=topic, keys=2, per_key=2)
    port = _free_port()
    env = {**subprocess_env, "WORKER_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "counter_999999.db").write_bytes(b"stale")  # from an earlier run
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
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--purge",  # a task left on the shared queue by another test would drain the rows
        ],
        env=env,
        log_path=tmp_path / "worker.log",
        ready_text="ready.",
    )
    worker.start(timeout=60)
    try:
        # when
        text = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        # then
        samples = _samples(text)
        assert samples[("outbox_pending_rows", (("topic", topic),))] == 4
        assert samples[("commerce_database_scrape_success", ())] == 1
        assert not (tmp_path / "prometheus" / "counter_999999.db").exists()
        assert "PROMETHEUS_MULTIPROC_DIR is not set" not in worker.log_tail()
    finally:
        worker.stop()
