"""The API's /metrics: protected, and the backlog figures read from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from commerce.observability import metrics
from outbox.models import OutboxEvent
from tests.factories import user_make
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-for-tests"


@pytest.fixture(autouse=True)
def _metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def test_metrics_refuse_an_anonymous_caller_a_wrong_token_and_a_non_staff_user():
    client = Client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    client.force_login(user_make())
    response = client.get("/metrics")
    assert response.status_code == 401
    assert b"outbox" not in response.content


def test_metrics_answer_the_token_and_a_staff_session():
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    staff = Client()
    staff.force_login(user_make(is_staff=True))
    response = staff.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")


def test_backlog_and_dead_rows_per_topic_come_from_the_database_and_return_to_zero():
    # given: 6 pending rows, 2 of them dead, on the catalog topic; the oldest created 90 s ago
    topic = settings.KAFKA_TOPICS["catalog-events"]
    other = settings.KAFKA_TOPICS["order-events"]
    rows = outbox_rows_bulk(topic=topic, keys=3, per_key=2)
    OutboxEvent.objects.filter(seq=rows[0].seq).update(created_at=timezone.now() - timedelta(seconds=90))
    OutboxEvent.objects.filter(seq__in=[r.seq for r in rows[-2:]]).update(status=OutboxEvent.Status.DEAD)
    client = Client()

    # when
    figures = scrape(client)

    # then
    assert figures[("outbox_pending_rows", (("topic", topic),))] == 4
    assert figures[("outbox_dead_rows", (("topic", topic),))] == 2
    assert 90 <= figures[("outbox_oldest_pending_age_seconds", (("topic", topic),))] < 120
    # A topic without rows is a 0, not a missing series.
    assert figures[("outbox_pending_rows", (("topic", other),))] == 0
    assert figures[("commerce_database_scrape_success", ())] == 1

    # when the backlog is published
    OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).update(
        status=OutboxEvent.Status.PUBLISHED, published_at=timezone.now()
    )

    # then
    figures = scrape(client)
    assert figures[("outbox_pending_rows", (("topic", topic),))] == 0
    assert figures[("outbox_oldest_pending_age_seconds", (("topic", topic),))] == 0
    assert figures[("outbox_dead_rows", (("topic", topic),))] == 2


def test_the_process_counters_are_served_next_to_the_database_figures():
    before = scrape(Client()).get(("outbox_events_published_total", (("topic", "served-topic"),)), 0.0)
    metrics.relay_published_observed(topic="served-topic", occurred_at=timezone.now())
    after = scrape(Client())[("outbox_events_published_total", (("topic", "served-topic"),))]
    assert after == before + 1
