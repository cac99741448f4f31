"""The back office's end of the event schemas: a record whose payload does not match its JSON
Schema is dead-lettered with the schema's error path; the bounds of the contract are the schema."""

from __future__ import annotations

import json

import pytest

from backoffice import contract
from backoffice.contract import ContractViolation, event_parse
from backoffice.isolation import batch_apply_isolating, records_parse
from backoffice.models import DeadLetter, InboxEntry
from backoffice.projections import PoisonRecord
from backoffice.schemas import payload_schema
from tests.backoffice.stream import Record, consumed, like, order_event, stock, view


def _parse(record: Record):
    return event_parse(topic="t", partition=0, offset=0, key=record.key, value=record.value, headers=record.headers)


def _with_payload(record: Record, change) -> Record:
    payload = json.loads(record.value)
    change(payload)
    return Record(record.topic_stream, record.key, json.dumps(payload).encode(), record.headers)


def _set_quantity(payload: dict, quantity: object) -> None:
    payload["lines"][0]["quantity"] = quantity


@pytest.mark.parametrize(
    "change,error",
    [
        (lambda p: _set_quantity(p, -1), "payload.lines[0].quantity: -1 is less than the minimum of 1"),
        (lambda p: _set_quantity(p, "2"), "payload.lines[0].quantity: '2' is not of type 'integer'"),
        (lambda p: p.pop("order_number"), "payload.order_number: missing ('order_number' is a required property)"),
        (lambda p: p.update(final_total="12.345"), "payload.final_total: '12.345' does not match"),
        (lambda p: p.update(order_number="N" * 65), "payload.order_number: 'NNN"),
        (lambda p: p.update(lines=[]), "payload.lines: [] should be non-empty"),
    ],
)
def test_a_payload_that_breaks_its_schema_is_refused_with_the_schemas_error_path(change, error):
    bad = _with_payload(order_event("OrderConfirmed", "41", [("3", 2, "5.00")]), change)
    with pytest.raises(ContractViolation) as refused:
        _parse(bad)
    assert str(refused.value).startswith(error), str(refused.value)


def test_a_bound_error_says_which_column_bound_it_is():
    bad = _with_payload(
        order_event("OrderConfirmed", "41", [("3", 2, "5.00")]), lambda p: p.update(final_total="1234567890123.00")
    )
    with pytest.raises(ContractViolation, match=r"payload\.final_total: .* \(an amount .*numeric\(14,2\)"):
        _parse(bad)


@pytest.mark.django_db
def test_a_record_that_breaks_its_schema_is_dead_lettered_with_the_error_path():
    # given a batch with one order line of quantity -1 between good records
    bad = _with_payload(order_event("OrderConfirmed", "41", [("3", 2, "5.00")]), lambda p: _set_quantity(p, -1))
    records = [view("3"), bad, like("3", True)]
    forwarded: list[PoisonRecord] = []
    # when it is applied
    outcome = batch_apply_isolating(group="g", batch=records_parse(consumed(records)), forward=forwarded.extend)
    # then the bad one is a dead letter naming the path and the rule, the others are applied
    assert (outcome.applied, outcome.dead_lettered) == (2, 1)
    letter = DeadLetter.objects.get()
    assert letter.offset == 1
    assert letter.error.startswith("payload.lines[0].quantity: -1 is less than the minimum of 1")
    assert [p.error for p in forwarded] == [letter.error]
    assert InboxEntry.objects.count() == 2


def test_the_schema_carries_the_contracts_bounds():
    schema = payload_schema("OrderCreated", 1)
    line = schema["properties"]["lines"]["items"]
    assert line["properties"]["quantity"]["minimum"] == 1
    assert line["properties"]["quantity"]["maximum"] == contract.INTEGER_MAX
    assert schema["properties"]["order_number"]["maxLength"] == 64
    assert schema["properties"]["final_total"]["pattern"] == r"^-?[0-9]{1,12}(\.[0-9]{1,2})?$"
    assert set(schema["required"]) == set(contract.PAYLOADS[("OrderCreated", 1)][1])


def test_a_loosened_bound_is_the_schemas_bound_at_once(monkeypatch):
    # given a stock quantity past the integer column
    big = stock("3", 2**40, 1)
    with pytest.raises(ContractViolation, match="maximum of 2147483647"):
        _parse(big)
    # when the bound is loosened, the compiled schema follows it (compiled per bounds)
    monkeypatch.setattr(contract, "INTEGER_MAX", 2**50)
    assert _parse(big).payload["quantity"] == 2**40


def test_a_float_is_not_an_integer_though_json_schema_says_so():
    bad = _with_payload(stock("3", 5, 1), lambda p: p.update(quantity=5.0))
    with pytest.raises(ContractViolation, match=r"payload\.quantity: expected an integer"):
        _parse(bad)


def test_an_error_past_the_schema_in_a_line_names_the_line():
    bad = _with_payload(
        order_event("OrderConfirmed", "41", [("3", 2, "5.00"), ("4", 1, "1.00")]),
        lambda p: p["lines"][1].update(quantity=1.0),
    )
    with pytest.raises(ContractViolation) as refused:
        _parse(bad)
    assert str(refused.value) == "payload.lines[1].quantity: expected an integer, got 1.0"
