"""The pipeline dashboard in a real browser (Debian's headless Chromium, driven by Playwright):
log in, check the counts against the database, follow an order's trace to its Kafka partitions
and offsets, requeue a dead outbox row with the admin action, keep a screenshot."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from backoffice.consumer import EventConsumer
from backoffice.models import InboxEntry
from catalog.services import product_create
from orders.services import OrderLineRequest, order_place
from outbox.kafka import producer_reset
from outbox.models import OutboxEvent
from outbox.relay import relay_drain
from tests.factories import user_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def pipeline_data(kafka_topics, settings):
    """An order whose events went through the real relay, broker and consumer, and a dead row."""
    producer_reset()
    settings.BACKOFFICE_GROUP_ID = f"browser-{uuid.uuid4().hex[:6]}"
    shopper = user_make()
    product = product_create(name="Traced kettle", price=Decimal("30.00"), stock=5)
    order = order_place(user=shopper, lines=[OrderLineRequest(product_id=product.id, quantity=2)])
    relay_drain()
    consumer = EventConsumer(topics=list(kafka_topics.values()), group_id=settings.BACKOFFICE_GROUP_ID)
    consumer.run(until_idle_s=2)
    consumer.close()
    dead = OutboxEvent.objects.filter(type="StockChanged").first()
    assert dead is not None
    dead.pk = None
    dead.event_id = uuid.uuid4()
    dead.status = OutboxEvent.Status.DEAD
    dead.attempts = 12
    dead.last_error = "MessageSizeTooLargeError: simulated"
    dead.save()
    get_user_model().objects.create_superuser(username="ops", password="ops-pass-for-tests", email="")
    return order, dead


def test_dashboard_shows_the_database_counts_traces_an_order_and_requeues_a_dead_row(
    live_server, pipeline_data, monkeypatch
):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls here stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    order, dead = pipeline_data
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        # given a logged-in staff member on the dashboard
        page.goto(f"{live_server.url}/admin/login/?next=/admin/pipeline/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", "ops-pass-for-tests")
        page.click("input[type=submit]")
        page.wait_for_selector("#pipeline-dashboard")
        # then its counts are the database's
        assert int(page.inner_text("#outbox-pending")) == OutboxEvent.objects.filter(status="pending").count()
        assert int(page.inner_text("#outbox-dead")) == 1
        assert int(page.inner_text("#outbox-published")) == OutboxEvent.objects.filter(status="published").count()
        assert (
            int(page.inner_text("#consumed-total"))
            == InboxEntry.objects.filter(consumer_group=django_settings.BACKOFFICE_GROUP_ID).count()
        )
        assert page.inner_text("#lag-total") == "0"
        assert page.locator("#events-chart svg polyline").count() == 2
        page.screenshot(path=str(ARTIFACTS / "pipeline-dashboard.png"), full_page=True)
        # when the order's trace is opened, its events carry their partition and offset
        page.click(f"#recent-orders a:has-text('{order.number}')")
        page.wait_for_selector("#trace-events")
        rows = page.locator("#trace-events tr.trace-event")
        order_events = (
            OutboxEvent.objects.filter(aggregatetype="order", aggregateid=str(order.id)).count()
            + OutboxEvent.objects.filter(type="StockChanged", payload__order_id=str(order.id)).count()
        )
        assert rows.count() == order_events == 2  # OrderCreated and the stock it reserved
        texts = [rows.nth(i).inner_text() for i in range(rows.count())]
        assert any("OrderCreated" in text for text in texts)
        for i in range(rows.count()):
            assert rows.nth(i).locator("td.partition").inner_text().strip().isdigit()
            assert rows.nth(i).locator("td.offset").inner_text().strip().isdigit()
        page.screenshot(path=str(ARTIFACTS / "order-trace.png"), full_page=True)
        # when the dead row is requeued with the admin action
        page.goto(f"{live_server.url}/admin/outbox/outboxevent/?status__exact=dead")
        page.check(f"input.action-select[value='{dead.seq}']")
        page.select_option("select[name=action]", "requeue_dead")
        page.click("button[name=index]")
        page.wait_for_selector("ul.messagelist")
        assert "Requeued 1 dead row" in page.inner_text("ul.messagelist")
        browser.close()
    # then the row is pending again, with a fresh attempt count
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == ("pending", 0)
