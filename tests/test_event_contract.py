"""The producer's events and the back office's contract describe the same payloads.

The back office never imports a domain app; this test, which may import both, keeps the two
sides (and docs/EVENTS.md) from drifting apart. It discovers the event classes itself (every
installed app's `events` module, then every concrete DomainEvent subclass defined there), so a
new event class that the contract does not know fails it.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
from django.apps import apps

from backoffice.contract import PAYLOADS, UPCASTERS, VERSIONED_EVENT_TYPES
from backoffice.handlers import HANDLERS
from outbox.envelope import DomainEvent

EVENTS_DOC = (Path(__file__).resolve().parents[1] / "docs" / "EVENTS.md").read_text()
# Fields of the envelope (headers), not of the payload.
ENVELOPE_FIELDS = {"event_id", "aggregate_version"}
# In the contract ahead of its producer: the payments domain emits it from another branch.
CONSUMED_BEFORE_PRODUCED = {"PaymentRefundRequired"}


def domain_event_modules() -> list[str]:
    """The `events` module of every installed app that has one (imported)."""
    names = []
    for config in apps.get_app_configs():
        name = f"{config.name}.events"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        names.append(name)
    return names


def event_classes(*, modules: list[str], root: type[DomainEvent] = DomainEvent) -> list[type[DomainEvent]]:
    """Concrete event classes (no subclass of their own) defined in these modules."""
    found: list[type[DomainEvent]] = []
    stack = [root]
    while stack:
        cls = stack.pop()
        children = cls.__subclasses__()
        stack.extend(children)
        if not children and cls.__module__ in modules:
            found.append(cls)
    return sorted(found, key=lambda cls: cls.event_type)


def contract_gaps(classes: list[type[DomainEvent]]) -> list[str]:
    """Every way these classes and the consumer's contract disagree (empty when they agree)."""
    gaps = []
    for cls in classes:
        spec = PAYLOADS.get((cls.event_type, cls.event_version))
        if spec is None:
            gaps.append(f"{cls.event_type} v{cls.event_version} is produced but not in the contract")
            continue
        aggregate_field, consumed = spec
        produced = {f.name for f in dataclasses.fields(cls)} - ENVELOPE_FIELDS
        if produced != set(consumed):
            gaps.append(f"{cls.event_type}: produced {sorted(produced)}, consumed {sorted(consumed)}")
        if cls.aggregate_field != aggregate_field:
            gaps.append(f"{cls.event_type}: aggregate field {cls.aggregate_field} vs {aggregate_field}")
    return gaps


DOMAIN_CLASSES = event_classes(modules=domain_event_modules())


def test_the_domain_apps_define_event_classes_and_each_is_found():
    modules = domain_event_modules()
    assert {"catalog.events", "orders.events", "payments.events"} <= set(modules)
    assert {"LikeChanged", "OrderConfirmed", "PaymentCompleted"} <= {cls.event_type for cls in DOMAIN_CLASSES}


def test_every_event_class_the_domain_defines_is_in_the_contract():
    assert contract_gaps(DOMAIN_CLASSES) == []


def test_every_type_of_the_contract_has_a_producer():
    # a version with an upcaster is still read, no longer produced
    produced = {(cls.event_type, cls.event_version) for cls in DOMAIN_CLASSES}
    expected = {key for key in PAYLOADS if key[0] not in CONSUMED_BEFORE_PRODUCED and key not in UPCASTERS}
    assert expected <= produced
    assert not produced & set(UPCASTERS)


def test_every_version_read_reaches_a_handler_through_its_upcasters():
    for event_type, read_version in PAYLOADS:
        version = read_version
        while (event_type, version) in UPCASTERS:
            version += 1
            assert (event_type, version) in PAYLOADS, f"{event_type} upcast to v{version}, not in the contract"
        assert (event_type, version) in HANDLERS, f"{event_type} v{version} has no handler"
    # a handler per latest version only: an upcast version has none of its own
    assert not set(HANDLERS) & set(UPCASTERS)


def test_a_new_event_class_missing_from_the_contract_fails_the_check():
    # given a domain module that defines a class the contract does not know (this module
    # plays the domain app), next to one the contract knows
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class OrderArchived(DomainEvent):
        stream = "order-events"
        aggregate_type = "order"
        aggregate_field = "order_id"
        order_id: str

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class LikeChanged(DomainEvent):
        stream = "catalog-events"
        aggregate_type = "product"
        aggregate_field = "product_id"
        product_id: str
        user_id: str
        liked: bool

    # when the test's discovery and check run over it
    classes = event_classes(modules=[__name__])
    gaps = contract_gaps(classes)
    # then both are found, and the unknown one alone is reported
    assert {cls.event_type for cls in classes} == {"OrderArchived", "LikeChanged"}
    assert gaps == ["OrderArchived v1 is produced but not in the contract"]


@pytest.mark.parametrize("event_type,version", sorted(PAYLOADS))
def test_every_type_and_version_of_the_contract_is_documented_with_its_fields(event_type, version):
    # the latest version's row is `| `Type` |`, an older one's `| `Type` v1 |`
    label = f"| `{event_type}` |" if (event_type, version + 1) not in PAYLOADS else f"| `{event_type}` v{version} |"
    row = next((line for line in EVENTS_DOC.splitlines() if line.startswith(label)), None)
    assert row is not None, f"{event_type} v{version} has no row in docs/EVENTS.md"
    _, fields = PAYLOADS[(event_type, version)]
    assert all(f"`{name}`" in row or name == "lines" for name in fields), row


def test_the_types_that_require_aggregate_version_are_documented():
    section = EVENTS_DOC[EVENTS_DOC.index("aggregate_version") :]
    assert all(f"`{name}`" in section for name in VERSIONED_EVENT_TYPES)
