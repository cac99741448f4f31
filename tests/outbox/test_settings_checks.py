"""Settings the relay cannot honour fail at start, with one clear line: `manage.py check`, the
Celery worker, `consume_events`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests.support.processes import celery_worker_managed

IMPOSSIBLE = [
    pytest.param({"OUTBOX_CLAIM_TTL": 3.0}, "outbox.E003", id="claim-ttl-shorter-than-a-batch-send"),
    pytest.param({"OUTBOX_BACKOFF_BASE": 90.0, "OUTBOX_BACKOFF_MAX": 60.0}, "outbox.E002", id="backoff-base-above-max"),
    pytest.param({"OUTBOX_BATCH_SIZE": 0}, "outbox.E001", id="batch-size-0"),
    pytest.param(
        {"KAFKA_BOOTSTRAP_SERVERS": ["kafka-without-port"]}, "outbox.E004", id="bootstrap-servers-not-parsing"
    ),
    pytest.param({"KAFKA_BOOTSTRAP_SERVERS": ["kafka:notaport"]}, "outbox.E004", id="bootstrap-servers-bad-port"),
    pytest.param({"KAFKA_PRODUCER_ACKS": "1"}, "outbox.E005", id="acks-1-with-idempotence"),
    pytest.param({"OUTBOX_WAKEUP": "listen"}, "outbox.E007", id="unknown-wake-up"),
    pytest.param({"KAFKA_CLIENT": "librdkafka"}, "outbox.E008", id="unknown-kafka-client"),
    pytest.param({"OUTBOX_LOOP_POLL_INTERVAL": 0.0}, "outbox.E010", id="loop-poll-interval-0"),
]


def test_the_confluent_client_without_confluent_kafka_installed_fails_the_check(settings, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "confluent_kafka" else find_spec(name, *args)
    )
    settings.KAFKA_CLIENT = "confluent"
    with pytest.raises(SystemCheckError) as failed:
        call_command("check")
    assert "outbox.E009" in str(failed.value)


def test_the_default_settings_pass_the_check():
    call_command("check")  # raises SystemCheckError on any error


@pytest.mark.parametrize("overrides,code", IMPOSSIBLE)
def test_an_impossible_setting_fails_manage_py_check(overrides, code, settings):
    for name, value in overrides.items():
        setattr(settings, name, value)
    with pytest.raises(SystemCheckError) as failed:
        call_command("check")
    assert code in str(failed.value)


def _env_with(subprocess_env: dict[str, str], **overrides: str) -> dict[str, str]:
    return dict(subprocess_env, **overrides)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_worker_refuses_to_start_with_one_clear_line(subprocess_env, tmp_path):
    # given a worker configured with a batch size of 0
    worker = celery_worker_managed(
        env=_env_with(subprocess_env, OUTBOX_BATCH_SIZE="0"), log_path=tmp_path / "worker.log"
    )
    # when it starts, then it exits at once, before taking any task, with the reason on one line
    with pytest.raises(RuntimeError, match="exited with 2"):
        worker.start(timeout=60)
    lines = [line for line in worker.log_tail(200).splitlines() if "outbox.E001" in line]
    assert lines == [
        "outbox settings: (outbox.E001) OUTBOX_BATCH_SIZE is 0: the relay would claim "
        "nothing; set OUTBOX_BATCH_SIZE to 1 or more (default 500)"
    ]
    assert "ready." not in worker.log_tail(200)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_consume_events_refuses_to_start_with_one_clear_line(subprocess_env):
    # given the consumer started with a KAFKA_BOOTSTRAP_SERVERS that does not parse
    env = _env_with(subprocess_env, KAFKA_BOOTSTRAP_SERVERS="kafka-without-port")
    # when it starts
    finished = subprocess.run(
        [sys.executable, "manage.py", "consume_events"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then it exits non-zero, naming the setting and what is wrong with it
    assert finished.returncode != 0
    assert "(outbox.E004) KAFKA_BOOTSTRAP_SERVERS entry 'kafka-without-port' is not host:port" in finished.stderr, (
        finished.stderr[-2000:]
    )
