"""The AsyncAPI document of the events: generated from the contract, committed, served, and
valid for the official AsyncAPI parser (which a broken document fails)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.core.management import CommandError, call_command

from backoffice.asyncapi import asyncapi_document, asyncapi_yaml
from backoffice.contract import PAYLOADS, VERSIONED_EVENT_TYPES, payload_check

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"


def test_the_committed_document_is_what_the_contract_generates():
    # When this fails: `manage.py asyncapi` rewrites docs/asyncapi.yaml (and refuses a change
    # that breaks a version), then commit it with the contract's change.
    assert COMMITTED.read_text() == asyncapi_yaml()


def test_every_event_type_and_version_is_a_message_of_its_topic():
    document = asyncapi_document()
    messages = document["components"]["messages"]
    assert set(messages) == {f"{name}.v{version}" for name, version in PAYLOADS}
    channel_of = {name: channel["address"] for channel in document["channels"].values() for name in channel["messages"]}
    assert channel_of["LikeChanged.v1"] == "catalog-events"
    assert channel_of["OrderConfirmed.v2"] == "order-events"
    sent = {
        ref["$ref"].rsplit("/", 1)[1] for operation in document["operations"].values() for ref in operation["messages"]
    }
    # the superseded version is read, not produced
    assert "OrderConfirmed.v2" in sent
    assert "OrderConfirmed.v1" not in sent
    assert set(sent) == set(messages) - {"OrderConfirmed.v1"}


@pytest.mark.parametrize("name", sorted(f"{n}.v{v}" for n, v in PAYLOADS))
def test_each_example_matches_its_schemas_and_the_contract_accepts_it(name):
    message = asyncapi_document()["components"]["messages"][name]
    (example,) = message["examples"]
    jsonschema.validate(example["payload"], message["payload"], cls=jsonschema.Draft7Validator)
    jsonschema.validate(example["headers"], message["headers"], cls=jsonschema.Draft7Validator)
    event_type, version = name.rsplit(".v", 1)
    payload_check(event_type, int(version), example["payload"])
    assert ("aggregate_version" in message["headers"]["required"]) == (event_type in VERSIONED_EVENT_TYPES)


def test_an_example_that_breaks_its_schema_fails_the_check():
    message = copy.deepcopy(asyncapi_document()["components"]["messages"]["OrderConfirmed.v2"])
    message["examples"][0]["payload"]["lines"][0]["quantity"] = -1
    with pytest.raises(jsonschema.ValidationError, match="less than the minimum of 1"):
        jsonschema.validate(message["examples"][0]["payload"], message["payload"], cls=jsonschema.Draft7Validator)


@pytest.mark.django_db
def test_the_api_serves_the_document(api_client):
    # the same document as the file, without logging in (like /api/schema/)
    response = api_client.get("/api/events/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    assert response.content.decode() == COMMITTED.read_text()
    as_json = api_client.get("/api/events/schema/", {"format": "json"})
    assert as_json.json() == yaml.safe_load(COMMITTED.read_text())


def test_the_command_writes_the_document_and_check_fails_on_a_stale_one(tmp_path):
    target = tmp_path / "asyncapi.yaml"
    target.write_text(COMMITTED.read_text().replace("title: Commerce events", "title: Stale"))
    with pytest.raises(CommandError, match="differs from the contract"):
        call_command("asyncapi", "--check", "--output", str(target))
    call_command("asyncapi", "--output", str(target))
    assert target.read_text() == asyncapi_yaml()
    call_command("asyncapi", "--check", "--output", str(target))


def _validate(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / "asyncapi-validate"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.integration  # installs the parser from npm on its first run (scripts/asyncapi-validate)
def test_the_official_parser_accepts_the_document_and_refuses_a_broken_one(tmp_path):
    # given the committed document, and two broken copies: a payload schema with a type that
    # does not exist, an operation sending a message that does not exist
    broken_type = tmp_path / "broken-type.yaml"
    broken_type.write_text(COMMITTED.read_text().replace("type: integer", "type: integr", 1))
    document = yaml.safe_load(COMMITTED.read_text())
    document["operations"]["sendOrderEvents"]["messages"].append(
        {"$ref": "#/channels/orderEvents/messages/OrderShipped.v1"}
    )
    broken_ref = tmp_path / "broken-ref.yaml"
    broken_ref.write_text(yaml.safe_dump(document, sort_keys=False))
    # when the parser reads them
    good = _validate(COMMITTED)
    bad_type, bad_ref = _validate(broken_type), _validate(broken_ref)
    # then it accepts the committed one and refuses each broken one, naming the place
    assert good.returncode == 0, good.stdout + good.stderr
    assert "valid AsyncAPI 3.0.0" in good.stdout
    assert bad_type.returncode == 1, bad_type.stdout
    assert "/quantity/type" in bad_type.stdout, bad_type.stdout
    assert bad_ref.returncode == 1, bad_ref.stdout
    assert "OrderShipped.v1" in bad_ref.stdout, bad_ref.stdout
