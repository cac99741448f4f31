"""Which changes of a committed event schema break its version (docs/EVENTS.md, "Compatibility").

Within one version, every record already written (and any producer still running the old code)
must stay valid under the new schema, and every reader of the version must still find what it
reads. So a version's schema may gain an optional field, lose a constraint or widen a bound; it
may not lose a field, require one more, make a required field optional, narrow a type or a
bound, or add or change a pattern, format, constant or enumeration (a narrowing we cannot
prove is not one). A committed version may not disappear either: records of it stay on the
topics for as long as the retention keeps them, and a replay reads them.
"""

from __future__ import annotations

from typing import Any

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "const")


def _types(schema: dict[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None  # any type
    types = {kind} if isinstance(kind, str) else set(kind)
    if "number" in types:
        types.add("integer")  # a number schema takes integers
    return types


def schema_changes_incompatible(old: Any, new: Any, path: str = "") -> list[str]:
    """Every change from `old` to `new` that a record valid under `old`, or a reader of it,
    would not survive (empty when the change is compatible)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [f"{path or '/'}: schema changed from {old!r} to {new!r}"]
    where = path or "/"
    changes: list[str] = []
    old_types, new_types = _types(old), _types(new)
    if new_types is not None and (old_types is None or not old_types <= new_types):
        changes.append(f"{where}: type narrowed from {old.get('type', 'any')} to {new['type']}")
    changes.extend(
        f"{where}: {bound} raised from {old.get(bound, 'none')} to {new[bound]}"
        for bound in _LOWER_BOUNDS
        if bound in new and (bound not in old or new[bound] > old[bound])
    )
    changes.extend(
        f"{where}: {bound} lowered from {old.get(bound, 'none')} to {new[bound]}"
        for bound in _UPPER_BOUNDS
        if bound in new and (bound not in old or new[bound] < old[bound])
    )
    changes.extend(
        f"{where}: {keyword} changed from {old.get(keyword, 'none')!r} to {new[keyword]!r}"
        for keyword in _EXACT
        if keyword in new and new[keyword] != old.get(keyword)
    )
    if "enum" in new and ("enum" not in old or not set(map(repr, old["enum"])) <= set(map(repr, new["enum"]))):
        changes.append(f"{where}: enum narrowed from {old.get('enum', 'any')} to {new['enum']}")
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        changes.append(f"{where}: additional properties no longer allowed")
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    old_properties, new_properties = old.get("properties", {}), new.get("properties", {})
    changes.extend(f"{path}.{name}: new required field" for name in sorted(new_required - old_required))
    changes.extend(  # removed: below
        f"{path}.{name}: no longer required (readers of this version require it)"
        for name in sorted((old_required - new_required) & set(new_properties))
    )
    for name, old_property in old_properties.items():
        if name not in new_properties:
            changes.append(f"{path}.{name}: field removed")
        else:
            changes.extend(schema_changes_incompatible(old_property, new_properties[name], f"{path}.{name}"))
    if "items" in old and "items" in new:
        changes.extend(schema_changes_incompatible(old["items"], new["items"], f"{path}[]"))
    return changes


def document_changes_incompatible(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The incompatible changes of every message (event type and version) of a committed
    AsyncAPI document: its payload and its headers."""
    old_messages = old.get("components", {}).get("messages", {})
    new_messages = new.get("components", {}).get("messages", {})
    changes = []
    for name, message in sorted(old_messages.items()):
        if name not in new_messages:
            changes.append(f"{name}: version removed (its records stay readable on the topics)")
            continue
        for part in ("payload", "headers"):
            changes.extend(
                f"{name} {part}{change}"
                for change in schema_changes_incompatible(message.get(part, {}), new_messages[name].get(part, {}))
            )
    return changes
