"""Deletion placeholders: the schema-valid document a move-out is sent as. Pure; no I/O.

RxDB validates deleted documents against the schema too (rxdb-protocol.md §5.1.10), so a
document leaving a device must be complete. It must also reveal nothing the replication's filter
could not see: it holds the primary key, the values of the constrained fields as they were while
the document matched, ``_deleted: true``, and a neutral value for every other required property
(docs/partial-sync.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.schema import DELETED, Validator


class PlaceholderError(ValueError):
    """No valid placeholder can be built from this schema; the message names the property."""


def neutral(prop: Any, path: str) -> Any:
    """A value of the property's type that says nothing: empty, zero or the minimum, false."""
    if not isinstance(prop, Mapping):
        raise PlaceholderError(f"{path}: no schema to build a neutral value from")
    if "const" in prop:
        return prop["const"]
    if isinstance(prop.get("enum"), list) and prop["enum"]:
        return prop["enum"][0]
    if "default" in prop:
        return prop["default"]
    types = prop.get("type")
    kind = types if isinstance(types, str) else next(
        (t for t in (types or ()) if t != "null"), "null" if types else None
    )
    if kind == "string":
        return "_" * int(prop.get("minLength", 0))
    if kind in ("number", "integer"):
        low = prop.get("minimum", prop.get("exclusiveMinimum"))
        if low is None:
            high = prop.get("maximum")
            return 0 if high is None or high >= 0 else high
        value = int(low) + (1 if "exclusiveMinimum" in prop and "minimum" not in prop else 0)
        return value if value >= low else value + 1
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "array":
        count = int(prop.get("minItems", 0))
        return [neutral(prop.get("items"), f"{path}[]") for _ in range(count)]
    if kind == "object" or "properties" in prop:
        return required_neutrals(prop, path)
    raise PlaceholderError(f"{path}: cannot build a neutral value of type {types!r}")


def required_neutrals(schema: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    properties = schema.get("properties") or {}
    result = {}
    for name in schema.get("required") or ():
        result[name] = neutral(properties.get(name), f"{path}.{name}" if path else name)
    return result


class Placeholders:
    """Builds the placeholder deletions of one collection's schema."""

    def __init__(self, schema: Mapping[str, Any], primary_key: str) -> None:
        self._base = required_neutrals(schema)
        self._primary_key = primary_key

    def deletion(self, doc_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The placeholder for ``doc_id`` with ``values`` (constrained fields the filter saw)."""
        doc = dict(self._base)
        doc.update(values)
        doc[self._primary_key] = doc_id
        doc[DELETED] = True
        return doc

    def is_placeholder(self, doc: Any, constrained: tuple[str, ...]) -> bool:
        """Whether ``doc`` is exactly a placeholder this collection would send (with its own
        values of the constrained fields): a device answering a conflict with it."""
        if not isinstance(doc, dict) or doc.get(DELETED) is not True:
            return False
        doc_id = doc.get(self._primary_key)
        if not isinstance(doc_id, str):
            return False
        values = {name: doc[name] for name in constrained if name in doc}
        return doc == self.deletion(doc_id, values)


def check_placeholders(
    schema: Mapping[str, Any], primary_key: str, validate: Validator, fields: tuple[str, ...]
) -> None:
    """Refuse filters on a schema whose placeholder deletions RxDB would reject."""
    try:
        placeholders = Placeholders(schema, primary_key)
    except PlaceholderError as exc:
        raise PlaceholderError(
            f"filters need a valid deletion placeholder, and {exc}; give that property a "
            "default, an enum or a plain type"
        ) from None
    properties = schema.get("properties") or {}
    sample = {name: neutral(properties.get(name), name) for name in fields}
    problems = validate(placeholders.deletion("placeholder-check", sample))
    if problems:
        raise PlaceholderError(
            "filters need a valid deletion placeholder (a moved-out document is sent as one), "
            f"but the schema refuses it: {'; '.join(problems)}"
        )
