"""A committed event schema may change only compatibly within its version (docs/EVENTS.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from backoffice import contract
from backoffice.asyncapi import asyncapi_document
from backoffice.schema_compat import document_changes_incompatible

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def _committed() -> dict:
    return yaml.safe_load(COMMITTED.read_text())


def test_the_generated_schemas_are_compatible_with_the_committed_ones():
    # When this fails, the contract changed a committed version incompatibly: make the change
    # a new version (with an upcaster) or a new type instead.
    assert document_changes_incompatible(_committed(), asyncapi_document()) == []


def _confirmed(document: dict) -> dict:
    return document["components"]["messages"]["OrderConfirmed.v2"]["payload"]


def _line(document: dict) -> dict:
    return _confirmed(document)["properties"]["lines"]["items"]


def _removed_field(d: dict) -> None:
    del _confirmed(d)["properties"]["currency"]
    _confirmed(d)["required"].remove("currency")


def _new_required(d: dict) -> None:
    _confirmed(d)["properties"]["channel"] = {"type": "string"}
    _confirmed(d)["required"].append("channel")


def _narrowed_bound(d: dict) -> None:
    _line(d)["properties"]["quantity"]["maximum"] = 1000


def _narrowed_type(d: dict) -> None:
    _confirmed(d)["properties"]["coupon"] = {"type": "string"}
    _confirmed(d)["properties"]["order_number"]["type"] = "integer"


def _shorter_text(d: dict) -> None:
    _confirmed(d)["properties"]["order_number"]["maxLength"] = 32


def _removed_version(d: dict) -> None:
    del d["components"]["messages"]["OrderConfirmed.v1"]


def _header_required(d: dict) -> None:
    d["components"]["messages"]["LikeChanged.v1"]["headers"]["required"].append("aggregate_version")


@pytest.mark.parametrize(
    "change,reported",
    [
        (_removed_field, "OrderConfirmed.v2 payload.currency: field removed"),
        (_new_required, "OrderConfirmed.v2 payload.channel: new required field"),
        (_narrowed_bound, "OrderConfirmed.v2 payload.lines[].quantity: maximum lowered from 2147483647 to 1000"),
        (_narrowed_type, "OrderConfirmed.v2 payload.order_number: type narrowed from string to integer"),
        (_shorter_text, "OrderConfirmed.v2 payload.order_number: maxLength lowered from 64 to 32"),
        (_removed_version, "OrderConfirmed.v1: version removed (its records stay readable on the topics)"),
        (_header_required, "LikeChanged.v1 headers.aggregate_version: new required field"),
    ],
)
def test_an_incompatible_change_within_a_version_is_reported(change, reported):
    new = copy.deepcopy(_committed())
    change(new)
    assert document_changes_incompatible(_committed(), new) == [reported]


def _optional_field(d: dict) -> None:
    _confirmed(d)["properties"]["channel"] = {"type": "string"}


def _widened_bound(d: dict) -> None:
    _confirmed(d)["properties"]["order_number"]["maxLength"] = 128
    _line(d)["properties"]["quantity"]["minimum"] = 0


def _nullable(d: dict) -> None:
    _confirmed(d)["properties"]["order_number"]["type"] = ["string", "null"]


def _new_version(d: dict) -> None:
    d["components"]["messages"]["OrderConfirmed.v3"] = {"payload": {"required": ["anything"]}}


@pytest.mark.parametrize("change", [_optional_field, _widened_bound, _nullable, _new_version])
def test_a_compatible_change_is_not_reported(change):
    new = copy.deepcopy(_committed())
    change(new)
    assert document_changes_incompatible(_committed(), new) == []


def test_the_command_refuses_to_write_an_incompatible_change(monkeypatch, tmp_path):
    # given the committed document, and a contract whose integers now stop at 1,000,000
    target = tmp_path / "asyncapi.yaml"
    target.write_text(COMMITTED.read_text())
    monkeypatch.setattr(contract, "INTEGER_MAX", 1_000_000)
    # when the document is regenerated, then the command refuses, naming the change
    with pytest.raises(CommandError, match=r"LikeChanged|StockChanged.v1 payload.quantity: maximum lowered"):
        call_command("asyncapi", "--output", str(target))
    assert target.read_text() == COMMITTED.read_text()
