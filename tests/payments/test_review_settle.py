"""A payment under review (NEEDS_REVIEW: the gateway said "processing" past PAYMENT_REVIEW_AFTER,
or could not be asked) is settled by a person in the admin, after checking the charge at the
gateway: asked again, recorded as captured, or as not captured. Each goes through the same
service as the gateway's own answer: its events, its order's reaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from catalog.models import Product
from orders.models import Order
from orders.services import OrderLineRequest, order_place
from outbox.models import OutboxEvent
from payments.gateway import ChargeState, ChargeStatus
from payments.models import Payment
from payments.services import payment_complete, payment_reconcile, payment_request
from tests.factories import product_make, user_make
from tests.support.gateways import SilentGateway

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:payments_payment_changelist"


@pytest.fixture(autouse=True)
def _silent_gateway(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    settings.PAYMENT_RECONCILE_AFTER = 30
    settings.PAYMENT_REVIEW_AFTER = 3600


def _under_review() -> tuple[Product, Payment]:
    user = user_make()
    product = product_make(stock=5)
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=2)])
    payment = payment_request(user=user, order_id=order.id, card_type="VISA")
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.PROCESSING)
    assert payment_reconcile(now=timezone.now() + timedelta(seconds=3601)).marked_for_review == 1
    payment.refresh_from_db()
    assert payment.status == Payment.Status.NEEDS_REVIEW
    return product, payment


def _reviewer(client, *, may_settle: bool = True):
    user = user_make(is_staff=True, username="reviewer")
    codenames = ["view_payment"] + (["payment_review_settle"] if may_settle else [])
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def _act(client, action: str, payment: Payment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [payment.pk]}, follow=True)


def _messages(page) -> list[str]:
    return [str(message) for message in page.context["messages"]]


def _offered(page) -> set[str]:
    form = page.context.get("action_form") if page.context else None
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def _types_of(order_id: int) -> list[str]:
    return list(
        OutboxEvent.objects.filter(aggregatetype="order", aggregateid=str(order_id))
        .order_by("seq")
        .values_list("type", flat=True)
    )


def test_recorded_as_captured_it_is_completed_and_its_order_confirmed(
    client, celery_eager, django_capture_on_commit_callbacks
):
    # given
    _, payment = _under_review()
    _reviewer(client)
    # when
    page = _act(client, "review_captured", payment, django_capture_on_commit_callbacks)
    # then
    payment.refresh_from_db()
    assert payment.status == Payment.Status.COMPLETED
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CONFIRMED
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentCompleted", "OrderConfirmed"]
    assert f"{payment.transaction_key}: COMPLETED" in _messages(page)


def test_recorded_as_not_captured_it_fails_naming_the_reviewer_and_its_order_is_cancelled(
    client, celery_eager, django_capture_on_commit_callbacks
):
    # given
    product, payment = _under_review()
    _reviewer(client)
    # when
    _act(client, "review_not_captured", payment, django_capture_on_commit_callbacks)
    # then: no money taken; the order gives its stock back
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_reason == "no capture at the gateway, checked by reviewer"
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CANCELLED
    assert Product.objects.get(id=product.id).stock == 5
    assert _types_of(payment.order_id)[:2] == ["OrderCreated", "PaymentFailed"]
    assert "OrderCancelled" in _types_of(payment.order_id)


def test_asked_again_the_gateways_answer_now_settles_it(client, celery_eager, django_capture_on_commit_callbacks):
    # given: the gateway has an answer by now
    _, payment = _under_review()
    _reviewer(client)
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.COMPLETED)
    # when
    _act(client, "review_ask_gateway", payment, django_capture_on_commit_callbacks)
    # then
    assert Payment.objects.get(id=payment.id).status == Payment.Status.COMPLETED
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CONFIRMED


def test_asked_again_while_the_gateway_still_processes_nothing_is_decided(client, django_capture_on_commit_callbacks):
    _, payment = _under_review()
    _reviewer(client)
    _act(client, "review_ask_gateway", payment, django_capture_on_commit_callbacks)
    assert Payment.objects.get(id=payment.id).status == Payment.Status.NEEDS_REVIEW
    SilentGateway.unreachable = True
    _act(client, "review_ask_gateway", payment, django_capture_on_commit_callbacks)
    assert Payment.objects.get(id=payment.id).status == Payment.Status.NEEDS_REVIEW
    assert _types_of(payment.order_id) == ["OrderCreated"]


def test_a_payment_the_gateway_settled_meanwhile_keeps_the_gateways_word(client, django_capture_on_commit_callbacks):
    # given: the capture's callback came while the reviewer looked at the page
    _, payment = _under_review()
    _reviewer(client)
    payment_complete(transaction_key=payment.transaction_key)
    # when: the reviewer says "not captured"
    page = _act(client, "review_not_captured", payment, django_capture_on_commit_callbacks)
    # then: the capture stands, nothing more recorded
    assert Payment.objects.get(id=payment.id).status == Payment.Status.COMPLETED
    assert _types_of(payment.order_id) == ["OrderCreated", "PaymentCompleted"]
    assert any("not under review" in message for message in _messages(page))


def test_the_service_refuses_a_payment_no_longer_under_review():
    from commerce.errors import IllegalTransition
    from payments.services import payment_review_settle

    _, payment = _under_review()
    payment_complete(transaction_key=payment.transaction_key)
    with pytest.raises(IllegalTransition, match="no longer under review: it is COMPLETED"):
        payment_review_settle(transaction_key=payment.transaction_key, captured=False, reviewer="someone")
    assert Payment.objects.get(id=payment.id).status == Payment.Status.COMPLETED


@pytest.mark.parametrize("action", ["review_ask_gateway", "review_captured", "review_not_captured"])
def test_a_staff_user_without_the_permission_is_offered_none_and_refused_each(
    client, action, django_capture_on_commit_callbacks
):
    # given: may view payments, may not settle them
    _, payment = _under_review()
    _reviewer(client, may_settle=False)
    SilentGateway.answers[payment.transaction_key] = ChargeStatus(ChargeState.COMPLETED)
    # when
    page = client.get(reverse(CHANGELIST))
    _act(client, action, payment, django_capture_on_commit_callbacks)
    # then
    assert page.status_code == 200
    assert action not in _offered(page)
    assert Payment.objects.get(id=payment.id).status == Payment.Status.NEEDS_REVIEW


def test_the_refunds_due_list_offers_no_review_action(client):
    user = _reviewer(client)
    user.user_permissions.add(Permission.objects.get(codename="view_refundduepayment"))
    payments = client.get(reverse(CHANGELIST))
    refunds_due = client.get(reverse("admin:payments_refundduepayment_changelist"))
    assert refunds_due.status_code == 200
    assert "review_captured" in _offered(payments)  # the reviewer may: offered where it applies
    assert not _offered(refunds_due) & {"review_ask_gateway", "review_captured", "review_not_captured"}
