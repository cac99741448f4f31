"""The contract's parse on the consumer's path (backoffice/contract.py, `event_parse`): its short
cuts (the strings of plain ASCII JSON not walked again, the numbers checked while decoding, the
event built without its frozen __init__) refuse and accept exactly what the plain reading does."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from django.conf import settings

from backoffice.contract import ContractViolation, IncomingEvent, event_parse, payload_check
from tests.backoffice.stream import Record, like, order_event, refund_required, stock, view


def _parse(record: Record) -> IncomingEvent:
    return event_parse(topic="t", partition=0, offset=7, key=record.key, value=record.value, headers=record.headers)


def _with_value(record: Record, value: bytes) -> Record:
    return Record(record.topic_stream, record.key, value, record.headers)


def _with_extra(record: Record, extra_json: str) -> Record:
    # A field the schema does not know (additionalProperties: a compatible addition) is not
    # checked by the schema: only the storable check stands between it and the event log.
    text = record.value.decode()
    return _with_value(record, (text[:-1] + f', "note": {extra_json}}}').encode())


@pytest.mark.parametrize(
    "extra_json,error",
    [
        ('"a\\u0000b"', "NUL character"),
        ('"\\ud800"', "not valid Unicode"),
        ('{"\\u0000": 1}', "NUL character"),
        ("NaN", "non-finite number (nan)"),
        ("-Infinity", "non-finite number (-inf)"),
        ("1e400", "non-finite number (inf)"),
        ("[1.5, 1e400]", "non-finite number (inf)"),
    ],
)
def test_a_value_the_event_log_cannot_store_is_refused_in_a_field_the_schema_does_not_know(extra_json, error):
    with pytest.raises(ContractViolation, match=re.escape(error)):
        _parse(_with_extra(view("3"), extra_json))


def test_a_lone_surrogate_written_as_raw_utf8_bytes_is_refused():
    # json.loads reads UTF-8 with surrogates passed through: ED A0 80 is a lone U+D800
    raw = view("3").value[:-1] + b', "note": "\xed\xa0\x80"}'
    with pytest.raises(ContractViolation, match="not valid Unicode"):
        _parse(_with_value(view("3"), raw))


@pytest.mark.parametrize(
    "value",
    [
        '{"note": "caf\u00e9"}',  # non-ASCII UTF-8
        '{"note": "caf\\u00e9 \\\\u"}',  # escapes, and an escaped backslash before a u
        '{"note": 1.25e3}',  # a finite float
    ],
)
def test_a_storable_extra_field_is_accepted(value):
    base = view("3")
    extra = json.loads(value)["note"]
    event = _parse(_with_extra(base, json.dumps(extra, ensure_ascii="\\u" in value)))
    assert event.raw_payload["note"] == extra


def test_json_in_utf16_is_read_as_json_loads_reads_it():
    base = view("3")
    event = _parse(_with_value(base, json.dumps(json.loads(base.value)).encode("utf-16")))
    assert event.payload["product_id"] == "3"


@pytest.mark.parametrize("value", [b"", b"[1]", b'{"a": ', b"\xff\xfe\x00", b'"text"'])
def test_a_value_that_is_not_a_json_object_is_refused(value):
    with pytest.raises(ContractViolation, match=r"value is not (JSON|a JSON object)"):
        _parse(_with_value(view("3"), value))


@pytest.mark.parametrize(
    "record",
    [
        like("3", True),
        view("3"),
        stock("3", 4, 2),
        order_event("OrderConfirmed", "5", [("3", 2, "2.50")]),
        order_event("OrderConfirmed", "6", [("3", 2, "2.50")], version=1),
        refund_required("5", "5.00"),
    ],
)
def test_the_parsed_event_is_the_one_its_constructor_makes(record):
    event = _parse(record)
    # every field set (a missing one raises here), each equal to what __init__ would set
    assert IncomingEvent(**vars(event)) == event
    assert event.offset == 7
    assert event.topic == "t"
    assert event.occurred_at.utcoffset() is not None


def test_an_order_confirmed_v1_is_read_as_v2():
    # given a v1 record, as still on the topics from before the upgrade
    record = order_event("OrderConfirmed", "6", [("3", 2, "2.50"), ("4", 3, "0.10")], version=1)
    assert dict(record.headers)["event_version"] == b"1"
    # when parsed, then its payload is v2: each line's subtotal, the shop's currency
    event = _parse(record)
    assert (event.event_version, event.payload_version) == (1, 2)
    assert [line["subtotal"] for line in event.payload["lines"]] == [Decimal("5.00"), Decimal("0.30")]
    assert event.payload["currency"] == settings.SHOP_CURRENCY
    # and the event log keeps it as it came
    assert "subtotal" not in event.raw_payload["lines"][0]


def test_the_stream_builds_order_confirmed_as_the_domain_does_in_v2():
    record = order_event("OrderConfirmed", "6", [("3", 2, "2.50")])
    assert dict(record.headers)["event_version"] == b"2"
    event = _parse(record)
    assert (event.event_version, event.payload_version) == (2, 2)
    assert event.payload["lines"][0]["subtotal"] == Decimal("5.00")


def test_a_payload_checked_from_a_dict_still_has_its_strings_checked():
    # the producer's check (outbox/schema_check.py) has no bytes: every string is walked
    payload = json.loads(view("3").value)
    with pytest.raises(ContractViolation, match="NUL character"):
        payload_check("ProductViewed", 1, {**payload, "note": "a\x00b"})


@pytest.mark.parametrize("subtotal", ["10.01", "0.00", "-10.00", "1000.00"])
def test_a_v2_line_whose_subtotal_is_not_its_quantity_times_its_price_is_refused(subtotal):
    # (the ledger of sales adds a line's subtotal when the order is confirmed and takes off
    # quantity x unit price when it is cancelled: a subtotal that disagrees would leave the
    # product's sales amount wrong for good)
    confirmed = order_event("OrderConfirmed", "50", [("3", 2, "5.00"), ("4", 1, "1.50")])
    payload = json.loads(confirmed.value)
    assert payload["lines"][0]["subtotal"] == "10.00"
    payload["lines"][0]["subtotal"] = subtotal
    with pytest.raises(ContractViolation, match=r"lines\[0\]\.subtotal: .* is not quantity x unit_price \(10\.00\)"):
        _parse(_with_value(confirmed, json.dumps(payload).encode()))


def test_a_v2_line_whose_subtotal_is_its_quantity_times_its_price_in_any_notation_is_read():
    confirmed = order_event("OrderConfirmed", "50", [("3", 2, "5.00")])
    payload = json.loads(confirmed.value)
    payload["lines"][0]["subtotal"] = "10"
    event = _parse(_with_value(confirmed, json.dumps(payload).encode()))
    assert event.payload["lines"][0]["subtotal"] == Decimal("10.00")
