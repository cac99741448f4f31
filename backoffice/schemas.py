"""The JSON Schemas of the event payloads, built from the contract's fields, and their check.

One compiled validator per (event type, version) and bounds: fastjsonschema compiles a schema
to Python code, which checks a payload about as fast as the hand-written checks it replaced
(bench/schema.py); jsonschema, which interprets the schema, took 10 to 30 times as long, too
slow on the consumer's path (10,000 events/s). jsonschema runs only once a payload has failed,
to word the error: the path of the value and the rule it breaks, as the JSON Schema ecosystem
says it (`payload.lines[0].quantity: -1 is less than the minimum of 1`).

The schemas are draft-07, the dialect of AsyncAPI's default schema format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema

from backoffice import contract
from backoffice.contract import ContractViolation

_validators: dict[tuple[Any, ...], Callable[[Any], Any]] = {}


def payload_schema(event_type: str, version: int) -> dict[str, Any]:
    """The JSON Schema of this type and version's payload, with the bounds as they are now."""
    _, fields = contract.PAYLOADS[(event_type, version)]
    return contract.object_schema(fields)


def _validator(event_type: str, version: int) -> Callable[[Any], Any]:
    key = (event_type, version, *contract.bounds())
    validate = _validators.get(key)
    if validate is None:
        # Formats (date-time) are not checked here: the field's conversion parses the time whole
        # (datetime.fromisoformat, its range in UTC), a second regex would only repeat it.
        validate = _validators[key] = fastjsonschema.compile(payload_schema(event_type, version), use_formats=False)
    return validate


def payload_validate(event_type: str, version: int, data: Any) -> None:
    """Raises ContractViolation with the path and rule of the first error, if any."""
    try:
        _validator(event_type, version)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ContractViolation(error_describe(payload_schema(event_type, version), data, exc)) from None


def _path(parts: Any) -> str:
    return "payload" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def error_describe(
    schema: dict[str, Any], data: Any, fallback: fastjsonschema.JsonSchemaValueException | None = None
) -> str:
    """The error jsonschema finds most relevant, as `path: message (what the bound is)`."""
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        # A rule the two libraries read differently (a format): fastjsonschema's own words.
        message = fallback.message if fallback is not None else "does not match its schema"
        return _shorten(message.replace("data", "payload", 1))
    if error.validator == "required":
        missing = error.message.split("'")[1] if error.message.count("'") >= 2 else "?"
        return f"{_path([*error.absolute_path, missing])}: missing ({_shorten(error.message)})"
    text = f"{_path(error.absolute_path)}: {_shorten(error.message)}"
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if description and error.validator != "type":
        text += f" ({description})"
    return text
