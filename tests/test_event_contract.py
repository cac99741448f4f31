"""The producer's events and the back office's contract describe the same payloads.

The back office never imports a domain app; this test, which may import both, keeps the two
sides (and docs/EVENTS.md) from drifting apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from backoffice.contract import PAYLOADS
from catalog import events as catalog_events
from orders import events as order_events
from outbox.envelope import DomainEvent
from payments import events as payment_events

EVENT_CLASSES = [cls for module in (catalog_events, order_events, payment_events)
                 for cls in vars(module).values()
                 if isinstance(cls, type) and issubclass(cls, DomainEvent) and cls.__module__ == module.__name__
                 and cls.event_type in {name for name, _ in PAYLOADS}]
EVENTS_DOC = (Path(__file__).resolve().parents[1] / "docs" / "EVENTS.md").read_text()


def test_every_catalogued_event_type_is_produced():
    assert {cls.event_type for cls in EVENT_CLASSES} == {name for name, _ in PAYLOADS}


@pytest.mark.parametrize("event_class", EVENT_CLASSES, ids=lambda cls: cls.event_type)
def test_payload_fields_match_the_consumer_contract_and_the_docs(event_class):
    produced = {f.name for f in dataclasses.fields(event_class)} - {"event_id"}
    aggregate_field, consumed = PAYLOADS[(event_class.event_type, event_class.event_version)]
    assert produced == set(consumed)
    assert event_class.aggregate_field == aggregate_field
    row = next(line for line in EVENTS_DOC.splitlines() if line.startswith(f"| `{event_class.event_type}`"))
    assert all(f"`{name}`" in row or name == "lines" for name in produced), row
