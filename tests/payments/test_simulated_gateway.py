"""The default, simulated gateway answers through the signed callback handler, asynchronously
(a Celery task), failing the configured share of payments."""

from __future__ import annotations

import pytest

from catalog.models import Product
from orders.models import Order
from orders.services import OrderLineRequest, order_place
from payments.gateway import callback_body, callback_signature, callback_signature_valid
from payments.models import Payment
from payments.services import payment_complete, payment_request
from tests.factories import product_make, user_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def simulated(settings, celery_eager):
    settings.PAYMENT_GATEWAY = "payments.simulator.SimulatedGateway"
    settings.PAYMENT_CALLBACK_BASE_URL = ""  # answer in-process through the same handler
    settings.PAYMENT_SIM_DELAY = 0


def _pay(django_capture_on_commit_callbacks) -> tuple[Product, Payment]:
    user = user_make()
    product = product_make(stock=3)
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product.id, quantity=1)])
    with django_capture_on_commit_callbacks(execute=True):
        payment = payment_request(user=user, order_id=order.id, card_type="AMEX")
    payment.refresh_from_db()
    return product, payment


def test_the_simulated_gateway_completes_and_the_order_is_confirmed(
    settings, simulated, django_capture_on_commit_callbacks
):
    settings.PAYMENT_SIM_FAILURE_RATE = 0.0
    _, payment = _pay(django_capture_on_commit_callbacks)
    assert payment.status == Payment.Status.COMPLETED
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CONFIRMED


def test_the_simulated_gateway_fails_and_the_order_is_cancelled(
    settings, simulated, django_capture_on_commit_callbacks
):
    settings.PAYMENT_SIM_FAILURE_RATE = 1.0
    product, payment = _pay(django_capture_on_commit_callbacks)
    assert payment.status == Payment.Status.FAILED
    assert payment.failure_reason == "card declined"
    assert Order.objects.get(id=payment.order_id).status == Order.Status.CANCELLED
    assert Product.objects.get(id=product.id).stock == 3


def test_the_signature_covers_the_exact_body_the_timestamp_and_the_event_id():
    body = callback_body(transaction_key="txn_" + "0" * 24, status="COMPLETED")
    signature = callback_signature(body, timestamp="1764086400", event_id="evt_1")
    assert callback_signature_valid(body, timestamp="1764086400", event_id="evt_1", signature=signature)
    assert not callback_signature_valid(body + b" ", timestamp="1764086400", event_id="evt_1", signature=signature)
    assert not callback_signature_valid(body, timestamp="1764086401", event_id="evt_1", signature=signature)
    assert not callback_signature_valid(body, timestamp="1764086400", event_id="evt_2", signature=signature)
    assert not callback_signature_valid(body, timestamp="1764086400", event_id="evt_1", signature=None)


def test_completing_twice_returns_the_payment_unchanged(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.SilentGateway"
    user = user_make()
    order = order_place(user=user, lines=[OrderLineRequest(product_id=product_make().id, quantity=1)])
    payment = payment_request(user=user, order_id=order.id, card_type="VISA")
    first = payment_complete(transaction_key=payment.transaction_key)
    again = payment_complete(transaction_key=payment.transaction_key)
    assert isinstance(first, Payment)
    assert isinstance(again, Payment)
    assert again.status == Payment.Status.COMPLETED
    assert again.finished_at == first.finished_at


def test_the_simulator_answers_a_status_lookup_truthfully(settings):
    from payments.gateway import ChargeState
    from payments.models import SimulatedCharge
    from payments.simulator import SimulatedGateway

    settings.PAYMENT_SIM_FAILURE_RATE = 0.0
    settings.PAYMENT_SIM_DELAY = 3600
    gateway = SimulatedGateway()
    # never asked: never seen
    assert gateway.payment_status(transaction_key="txn_" + "1" * 24).state is ChargeState.UNKNOWN
    # asked, its answer not due yet: still processing
    SimulatedCharge.objects.create(transaction_key="txn_" + "2" * 24)
    assert gateway.payment_status(transaction_key="txn_" + "2" * 24).state is ChargeState.PROCESSING
    # past the delay, even if its answer task was lost: the outcome it decided, and it sticks
    settings.PAYMENT_SIM_DELAY = 0
    assert gateway.payment_status(transaction_key="txn_" + "2" * 24).state is ChargeState.COMPLETED
    settings.PAYMENT_SIM_FAILURE_RATE = 1.0
    assert gateway.payment_status(transaction_key="txn_" + "2" * 24).state is ChargeState.COMPLETED
