"""Shared fixtures: settings for tests, the real Kafka broker, per-test topics, a real worker.

Integration tests (marker `integration`) run against the real services named by the
environment: `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `CELERY_BROKER_URL`. `make test` starts
them; nothing here replaces them with fakes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kafka import (
    kafka_ensure_broker,
    kafka_topics_create,
    kafka_topics_delete,
)
from tests.support.processes import (
    ManagedProcess,
    celery_worker_managed,
    database_url_for_subprocess,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = PROJECT_DIR / "var" / "test-artifacts"


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    ManagedProcess.kill_survivors()


# The relay's Kafka clients (KAFKA_CLIENT). A test module marked `relay_clients` runs each of its
# tests on both; every other test on the one the environment names (kafka-python by default).
KAFKA_CLIENTS = ("kafka-python", "confluent")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("relay_clients") is not None:
        metafunc.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)


@pytest.fixture(autouse=True)
def kafka_client(request, settings, monkeypatch) -> str:
    """The relay's Kafka client for this test, in the settings and in the environment its
    subprocesses inherit (autouse, so set before `subprocess_env` copies the environment)."""
    client = getattr(request, "param", None) or os.environ.get("KAFKA_CLIENT", "kafka-python")
    settings.KAFKA_CLIENT = client
    monkeypatch.setenv("KAFKA_CLIENT", client)
    return client


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    settings.SECURE_SSL_REDIRECT = False
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }
    # The on-commit kick would enqueue Celery tasks on the real broker; tests that want the
    # worker turn it on explicitly.
    settings.OUTBOX_KICK_ENABLED = False


@pytest.fixture
def celery_eager():
    """Run Celery tasks in the calling process (unit tests of reactions, no worker)."""
    from commerce.celery import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The bootstrap address of a broker that answers; starts the local one if none does."""
    return kafka_ensure_broker()


@pytest.fixture
def kafka_topics(kafka_bootstrap: str, settings) -> Iterator[dict[str, str]]:
    """Fresh topics (3 partitions, with their .dlq) for this test only; settings point at them."""
    suffix = uuid.uuid4().hex[:10]
    topics = {stream: f"test-{suffix}-{stream}" for stream in settings.KAFKA_TOPICS}
    created = list(topics.values()) + [f"{name}.dlq" for name in topics.values()]
    kafka_topics_create(kafka_bootstrap, created, partitions=3)
    settings.KAFKA_TOPICS = topics
    yield topics
    kafka_topics_delete(kafka_bootstrap, created)


@pytest.fixture
def subprocess_env(settings, kafka_topics: dict[str, str]) -> dict[str, str]:
    """Environment for a worker or consumer subprocess: the test database and this test's topics."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url_for_subprocess(settings.DATABASES["default"]),
        KAFKA_TOPIC_CATALOG=kafka_topics["catalog-events"],
        KAFKA_TOPIC_ORDERS=kafka_topics["order-events"],
        KAFKA_BOOTSTRAP_SERVERS=",".join(settings.KAFKA_BOOTSTRAP_SERVERS),
        DEBUG="1",
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def celery_worker_process(subprocess_env: dict[str, str], tmp_path: Path):
    """A real Celery worker (no beat) as a subprocess on this test's database, broker and topics."""
    process = celery_worker_managed(env=subprocess_env, log_path=tmp_path / "celery-worker.log")
    process.start(timeout=60)
    yield process
    process.stop()
