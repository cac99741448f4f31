"""/healthz, /readyz and the relay's health: the API's readiness depends on what the API needs
(database, cache), never on Kafka; the relay's health says when the broker is unreachable."""

from __future__ import annotations

import json
import time

import pytest
from django.core.management import call_command
from django.urls import reverse

from commerce.health import relay_health
from tests.factories import product_make, token_for, user_make
from tests.support.kafka import PrivateBroker

pytestmark = [pytest.mark.django_db]


def test_healthz_answers_without_dependencies(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_the_database_and_the_cache(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failing": []}


def test_readyz_names_a_failing_dependency_without_its_exception_text(client, settings):
    # given: a cache nobody listens to
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    # when
    response = client.get("/readyz")
    # then: 503 naming the check, and nothing of the error for an anonymous caller
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failing": ["cache"]}
    assert b"refused" not in response.content.lower()
    assert b"Error" not in response.content


def test_readyz_opens_no_kafka_client(client, settings, monkeypatch):
    import kafka

    def refuse(*args, **kwargs):
        raise AssertionError("readiness must not talk to Kafka")

    monkeypatch.setattr(kafka, "KafkaAdminClient", refuse)
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    assert client.get("/readyz").status_code == 200


def test_the_relay_health_is_for_staff_or_monitoring_only(client, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.HEALTH_TOKEN = "monitoring-token-for-tests"
    assert client.get("/health/relay").status_code == 403
    assert client.get("/health/relay", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    answer = client.get("/health/relay", HTTP_AUTHORIZATION="Bearer monitoring-token-for-tests")
    assert answer.status_code == 503
    assert answer.json()["broker"] == "unreachable"


@pytest.mark.integration
@pytest.mark.fault
def test_with_the_broker_stopped_readyz_is_200_orders_are_accepted_and_the_relay_says_unreachable(
    client, api_client, settings, capsys
):
    # given: a broker of this test's own, then stopped
    port = int(settings.KAFKA_BOOTSTRAP_SERVERS[0].rsplit(":", 1)[1]) + 2
    broker = PrivateBroker(port=port)
    settings.KAFKA_BOOTSTRAP_SERVERS = [broker.bootstrap]
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    admin = user_make(is_staff=True)
    try:
        broker.start()  # in the try: a start that fails half-way still stops what it started
        assert relay_health()["broker"] == "ok"
        broker.stop()
        # when / then: the API stays in rotation and takes orders (the outbox keeps them)
        assert client.get("/readyz").status_code == 200
        product = product_make(stock=3)
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user_make())}")
        placed = api_client.post("/api/orders/", {"lines": [{"product_id": product.id, "quantity": 1}]}, format="json")
        assert placed.status_code == 201, placed.content
        # and the relay's health says what is wrong, on the endpoint and the command
        client.force_login(admin)
        relay = client.get("/health/relay")
        assert relay.status_code == 503
        assert relay.json()["broker"] == "unreachable"
        assert "broker unreachable" in relay.json()["problems"]
        with pytest.raises(SystemExit) as exited:
            call_command("relay_health")
        assert exited.value.code == 1
        assert json.loads(capsys.readouterr().out)["broker"] == "unreachable"
        # and once the broker is back, the relay is healthy again
        broker.start()
        assert relay_health()["broker"] == "ok"
    finally:
        broker.stop()


@pytest.mark.integration
def test_the_backoffice_health_reports_lag_without_progress(client, settings, kafka_topics, kafka_bootstrap):
    from kafka import KafkaProducer

    # given: a fresh group, nothing waiting
    settings.BACKOFFICE_GROUP_ID = f"health-{kafka_topics['order-events']}"
    client.force_login(user_make(is_staff=True))
    healthy = client.get("/health/backoffice")
    assert healthy.status_code == 200
    assert healthy.json()["lag"] == 0
    # when: an event waits and no consumer handles it
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(kafka_topics["order-events"], key=b"1", value=b"{}").get(timeout=10)
    producer.close()
    settings.BACKOFFICE_STALE_SECONDS = 0
    stuck = client.get("/health/backoffice")
    # then
    assert stuck.status_code == 503
    assert stuck.json()["lag"] == 1
    assert stuck.json()["problems"] == ["lag 1 with no progress"]
    # and an unreachable Kafka is reported as such
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    assert client.get("/health/backoffice").json()["problems"] == ["kafka unavailable"]


def test_with_kafka_unreachable_the_status_pages_answer_within_a_probe_timeout(client, settings):
    # given Kafka unreachable (nothing listens on the port) and a staff user who may see the pages
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    staff = user_make(is_staff=True)
    staff.is_superuser = True
    staff.save(update_fields=["is_superuser"])
    client.force_login(staff)
    # when the back office's health and the pipeline dashboard are asked for
    began = time.monotonic()
    backoffice = client.get("/health/backoffice")
    backoffice_s = time.monotonic() - began
    began = time.monotonic()
    dashboard = client.get(reverse("pipeline-dashboard"))
    dashboard_s = time.monotonic() - began
    # then each says Kafka is unavailable within a probe's usual timeout (before: 30 s for the
    # health, 60 s for the dashboard: kafka-python's 30 s bootstrap default, once per client)
    assert backoffice.status_code == 503
    assert backoffice.json()["problems"] == ["kafka unavailable"]
    assert backoffice_s < 10, backoffice_s
    assert dashboard.status_code == 200
    assert b"Kafka unavailable" in dashboard.content
    assert dashboard_s < 15, dashboard_s


def test_the_lag_reader_gives_up_on_a_coordinator_that_does_not_answer(monkeypatch):
    # given brokers that answer metadata and offsets, and a group coordinator that never answers:
    # kafka-python waits for it without end unless the call is given a timeout (Timer(None))
    from kafka.errors import KafkaTimeoutError

    import commerce.dashboard

    waited: list[float] = []

    class CoordinatorAway:
        def __init__(self, **config: object) -> None:
            pass

        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1}

        def end_offsets(self, partitions, timeout_ms=None):
            return dict.fromkeys(partitions, 5)

        def committed(self, partition, metadata=False, timeout_ms=None):
            if timeout_ms is None:
                raise AssertionError("waits for the coordinator without end")
            waited.append(timeout_ms / 1000)
            time.sleep(timeout_ms / 1000)
            raise KafkaTimeoutError("the coordinator did not answer")

        def close(self) -> None:
            pass

    monkeypatch.setattr("kafka.KafkaConsumer", CoordinatorAway)
    # when the lag is read, then it says Kafka is unavailable, having waited one deadline in all
    lag = commerce.dashboard.consumer_lag("backoffice")
    assert isinstance(lag, str)
    assert lag.startswith("Kafka unavailable: KafkaTimeoutError"), lag
    assert 0 < sum(waited) <= commerce.dashboard.STATUS_KAFKA_TIMEOUT_S + 0.1, waited
