"""/healthz and /readyz against real dependencies: Kafka going away is named, and recovers."""

from __future__ import annotations

import pytest

from tests.support.kafka import PrivateBroker

pytestmark = [pytest.mark.django_db]


def test_healthz_answers_without_dependencies(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.integration
@pytest.mark.fault
def test_readyz_names_kafka_when_it_is_down_and_recovers(client, settings):
    broker = PrivateBroker(port=19094)
    broker.start()
    settings.KAFKA_BOOTSTRAP_SERVERS = [broker.bootstrap]
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        broker.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["failing"] == ["kafka"]
        assert down.json()["checks"]["database"] == "ok"
        broker.start()
        assert client.get("/readyz").status_code == 200
    finally:
        broker.stop()
