"""The event catalog as an AsyncAPI 3.0 document, generated from the contract (backoffice/contract.py).

Each topic is a channel; each (event type, version) a message with its envelope headers (a JSON
Schema of the Kafka headers), its payload's JSON Schema (the bounds the contract enforces), its
key (the Kafka binding) and an example built from the fields' examples. The application's
operations send the versions the domain produces today; a version only kept for reading (an
upcast one) stays a message of its channel, with no operation sending it.

`manage.py asyncapi` writes it to docs/asyncapi.yaml; the API serves it at /api/events/schema/.
"""

from __future__ import annotations

import uuid
from typing import Any

import yaml
from django.http import HttpRequest, HttpResponse, JsonResponse

from backoffice import contract
from backoffice.schemas import payload_schema

DOCUMENT_PATH = "docs/asyncapi.yaml"
# The document's own version: the minor grows with each compatible change, the major never
# (an incompatible change is a new event version or type, docs/EVENTS.md).
DOCUMENT_VERSION = "1.1.0"

# The payload field that holds the aggregate id -> the stream (logical topic) and aggregate type.
STREAMS = {"product_id": ("catalog-events", "product"), "order_id": ("order-events", "order")}
CHANNEL_IDS = {"catalog-events": "catalogEvents", "order-events": "orderEvents"}
AGGREGATES = {"catalog-events": "product", "order-events": "order"}

_TRACEPARENT = {
    "type": "string",
    "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
    "description": "W3C trace context of the request that caused the event",
}


def message_name(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


def produced_versions() -> dict[str, int]:
    """Each type's latest version: the one the domain produces (older ones are upcast)."""
    latest: dict[str, int] = {}
    for event_type, version in contract.PAYLOADS:
        latest[event_type] = max(version, latest.get(event_type, 0))
    return latest


def headers_schema(event_type: str, version: int, aggregate_type: str) -> dict[str, Any]:
    id_schema = contract.ID.schema()
    required = list(contract.REQUIRED_HEADERS)
    if event_type in contract.VERSIONED_EVENT_TYPES:
        required.append("aggregate_version")
    return {
        "type": "object",
        "required": required,
        "properties": {
            "event_id": {
                "type": "string",
                "format": "uuid",
                "description": "the event's id: the consumers' idempotency key",
            },
            "event_type": {"type": "string", "const": event_type},
            "event_version": {
                "type": "string",
                "const": str(version),
                "description": "the payload's schema version, an integer as text",
            },
            "aggregate_type": {"type": "string", "const": aggregate_type},
            "aggregate_id": {**id_schema, "description": "the aggregate's id, equal to the key"},
            "aggregate_version": {
                "type": "string",
                "pattern": "^[0-9]{1,19}$",
                "description": f"the aggregate's sequence number (at most {contract.SEQUENCE_MAX}): "
                "the order of its events without a clock"
                + ("; required for this type" if "aggregate_version" in required else "; may be absent for this type"),
            },
            "occurred_at": contract.TIME.schema(),
            "traceparent": _TRACEPARENT,
        },
        "additionalProperties": {"type": "string"},
    }


def _example(event_type: str, version: int, aggregate_field: str, fields: dict[str, contract.Field]) -> dict[str, Any]:
    payload = {name: field.example for name, field in fields.items()}
    aggregate_type = STREAMS[aggregate_field][1]
    headers = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"asyncapi:{event_type}:{version}")),
        "event_type": event_type,
        "event_version": str(version),
        "aggregate_type": aggregate_type,
        "aggregate_id": payload[aggregate_field],
        "occurred_at": payload["occurred_at"],
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    if event_type in contract.VERSIONED_EVENT_TYPES:
        headers["aggregate_version"] = "3"
    return {"name": f"{event_type} v{version}", "headers": headers, "payload": payload}


def asyncapi_document() -> dict[str, Any]:
    latest = produced_versions()
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for stream, channel_id in CHANNEL_IDS.items():
        channels[channel_id] = {
            "address": stream,
            "title": stream,
            "description": f"Events of the `{AGGREGATES[stream]}` aggregate, keyed by its id "
            "(per-key order). The address is the default topic name "
            "(settings.KAFKA_TOPICS); dead letters go to `<topic>.dlq`.",
            "messages": {},
        }
    for (event_type, version), (aggregate_field, fields) in sorted(contract.PAYLOADS.items()):
        stream, aggregate_type = STREAMS[aggregate_field]
        name = message_name(event_type, version)
        superseded = version < latest[event_type]
        messages[name] = {
            "name": event_type,
            "title": f"{event_type} v{version}",
            "summary": (
                f"Superseded by v{latest[event_type]}: no longer produced, still read (upcast by the back office)."
                if superseded
                else f"{event_type}, produced."
            ),
            "contentType": "application/json",
            "headers": headers_schema(event_type, version, aggregate_type),
            "payload": payload_schema(event_type, version),
            "bindings": {
                "kafka": {
                    "key": {**contract.ID.schema(), "description": f"the {aggregate_field} (UTF-8)"},
                    "bindingVersion": "0.5.0",
                }
            },
            "examples": [_example(event_type, version, aggregate_field, fields)],
        }
        channels[CHANNEL_IDS[stream]]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    operations = {}
    for stream, channel_id in CHANNEL_IDS.items():
        sent = [
            name
            for name in channels[channel_id]["messages"]
            if int(name.rsplit(".v", 1)[1]) == latest[name.rsplit(".v", 1)[0]]
        ]
        operations[f"send{channel_id[0].upper()}{channel_id[1:]}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"The outbox relay publishes the domain's events on {stream}.",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in sent],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Commerce events",
            "version": DOCUMENT_VERSION,
            "description": "The events the commerce backend publishes through its transactional "
            "outbox, as the back office reads them. Generated from "
            "backoffice/contract.py by `manage.py asyncapi`; the rules of "
            "compatible change are in docs/EVENTS.md. Every payload is also free "
            "of NUL characters, lone surrogates, NaN and infinities (stored as jsonb).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a schema used twice is written twice: no &anchors in a contract to read


def asyncapi_yaml() -> str:
    return yaml.dump(asyncapi_document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def asyncapi_view(request: HttpRequest) -> HttpResponse:
    """The document, YAML by default, JSON with `?format=json` (as /api/schema/ serves OpenAPI)."""
    if request.GET.get("format") == "json":
        return JsonResponse(asyncapi_document())
    return HttpResponse(asyncapi_yaml(), content_type="application/yaml; charset=utf-8")
