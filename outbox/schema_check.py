"""The producer's end of the event contract: an event whose payload does not match its JSON
Schema fails where it is recorded, in development and tests (`OUTBOX_EVENT_SCHEMA_CHECK`, on by
default when DEBUG is), rather than as a dead letter in the back office later.

The schema is the back office's own (backoffice/contract.py, backoffice/schemas.py): one
contract, checked at both ends. Off in production by default: the back office checks every
record anyway, and recording is on the path of every write.
"""

from __future__ import annotations

from django.conf import settings

from outbox.envelope import DomainEvent


class EventSchemaMismatch(ValueError):
    """The event does not match its schema: the message gives the path and the rule."""


def event_schema_check(event: DomainEvent) -> None:
    """Raises EventSchemaMismatch when the setting is on and the event breaks its schema."""
    if not settings.OUTBOX_EVENT_SCHEMA_CHECK:
        return
    from backoffice.contract import PAYLOADS, VERSIONED_EVENT_TYPES, ContractViolation, payload_check

    if (event.event_type, event.event_version) not in PAYLOADS:
        # An event the contract does not describe (a test's or a benchmark's own class): nothing
        # to check it against. Every class of the domain apps is in the contract: the contract
        # test (tests/test_event_contract.py) finds them all and fails on one that is not.
        return
    try:
        payload_check(event.event_type, event.event_version, event.payload())
    except ContractViolation as exc:
        raise EventSchemaMismatch(f"{event.event_type} v{event.event_version}: {exc}") from None
    if event.event_type in VERSIONED_EVENT_TYPES and event.aggregate_version is None:
        raise EventSchemaMismatch(
            f"{event.event_type} v{event.event_version}: aggregate_version "
            "is required (the back office dead-letters the record without it)"
        )
