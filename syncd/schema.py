"""Collections' RxDB schemas: primary keys and document validation. Pure; no I/O.

syncd validates with the same RxDB JSON schema the client uses, so a document the server stores is
one every client can store. RxDB's own keywords (``primaryKey``, ``indexes``, ``encrypted`` ...)
are not JSON Schema and are dropped before compiling; ``_deleted`` is allowed on every document
because RxDB adds it to every schema.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from syncd.exceptions import Unprocessable
from syncd.keys import MAX_ID_BYTES

# Keys RxDB adds to its schemas that are not JSON Schema, at the top level ...
_RXDB_TOP_LEVEL_KEYS = frozenset(
    {
        "primaryKey", "version", "indexes", "internalIndexes", "keyCompression", "encrypted",
        "attachments", "crdt", "sharding", "title", "description",
    }
)
# ... and inside property definitions.
_RXDB_PROPERTY_KEYS = frozenset({"final", "ref"})
# Fields RxDB keeps to itself: a document that carries them would confuse every client (§1.1).
RESERVED_FIELDS = ("_meta", "_rev", "_attachments")
DELETED = "_deleted"


class SchemaError(ValueError):
    """The RxDB schema cannot be served; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class PrimaryKey:
    """The document field that identifies a document; composite keys also name their parts."""

    field: str
    parts: tuple[str, ...] = ()
    separator: str = ""

    def composed(self, doc: dict[str, Any]) -> str | None:
        """The key RxDB would compose from the parts (JavaScript's ``Array.join``), or None for
        a simple key and for parts whose JavaScript spelling Python cannot reproduce exactly."""
        if not self.parts:
            return None
        spelled = [_js_join_text(doc.get(part)) for part in self.parts]
        if any(text is None for text in spelled):
            return None
        return self.separator.join(text for text in spelled if text is not None)


def _js_join_text(value: Any) -> str | None:
    if value is None:
        return ""  # Array.join writes null and undefined as empty strings
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int) and abs(value) < 10**21:
        return str(value)
    return None  # floats and huge integers: JavaScript's number formatting differs


def primary_key_of(schema: dict[str, Any]) -> PrimaryKey:
    pk = schema.get("primaryKey")
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        raise SchemaError("schema has no 'properties' object")
    if isinstance(pk, str):
        key = PrimaryKey(pk)
    elif isinstance(pk, dict):
        field, parts, sep = pk.get("key"), pk.get("fields"), pk.get("separator")
        if (
            not isinstance(field, str)
            or not isinstance(parts, list)
            or not parts
            or not all(isinstance(p, str) for p in parts)
            or not isinstance(sep, str)
        ):
            raise SchemaError(
                "composite primaryKey must be {\"key\": str, \"fields\": [str, ...], "
                "\"separator\": str}"
            )
        key = PrimaryKey(field, tuple(parts), sep)
    else:
        raise SchemaError("schema needs a 'primaryKey' (a field name or a composite key object)")
    prop = properties.get(key.field)
    if not isinstance(prop, dict) or prop.get("type") != "string":
        raise SchemaError(f"primary key field {key.field!r} must be a property of type 'string'")
    for part in key.parts:
        if part not in properties:
            raise SchemaError(f"composite key part {part!r} is not a property of the schema")
    return key


def schema_version_of(schema: dict[str, Any]) -> int:
    version = schema.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise SchemaError("'version' must be a non-negative integer")
    return version


def check_servable(schema: dict[str, Any]) -> None:
    """Refuse schemas syncd cannot replicate faithfully, with the reason."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise SchemaError("an RxDB schema is a JSON object with \"type\": \"object\"")
    # JavaScript truthiness: RxDB turns attachments on for any object, even an empty one.
    if schema.get("attachments") not in (None, False):
        raise SchemaError(
            "schemas with attachments are not supported: RxDB's JSON transports cannot carry "
            "attachment data (a Blob serialises to {})"
        )
    key = primary_key_of(schema)
    max_length = schema["properties"][key.field].get("maxLength")
    if isinstance(max_length, int) and not isinstance(max_length, bool) and (
        max_length > MAX_ID_BYTES
    ):
        raise SchemaError(
            f"the primary key {key.field!r} has maxLength {max_length}, but syncd stores ids of "
            f"at most {MAX_ID_BYTES} bytes of UTF-8; lower maxLength to {MAX_ID_BYTES} or less"
        )
    schema_version_of(schema)
    compile_validator(schema)


def key_length_warning(schema: dict[str, Any]) -> str | None:
    """Why some ids the schema admits may be refused for their length (422), if they may: the
    key has no maxLength, or one that admits more than ``MAX_ID_BYTES`` of UTF-8 (4 bytes per
    character at most). Call it after ``check_servable``."""
    key = primary_key_of(schema)
    max_length = schema["properties"][key.field].get("maxLength")
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        return (
            f"the primary key {key.field!r} has no maxLength; ids longer than {MAX_ID_BYTES} "
            "bytes of UTF-8 will be refused with 422. RxDB itself requires one: set "
            "\"maxLength\" (e.g. 100) on it"
        )
    if max_length * 4 > MAX_ID_BYTES:
        return (
            f"the primary key {key.field!r} has maxLength {max_length}: ids of non-ASCII "
            f"characters near that length can exceed {MAX_ID_BYTES} bytes of UTF-8 and will be "
            f"refused with 422; a maxLength of {MAX_ID_BYTES // 4} or less always fits"
        )
    return None


Validator = Callable[[dict[str, Any]], list[str]]


def compile_validator(schema: dict[str, Any]) -> Validator:
    """A function returning the problems of one document (empty when it is valid)."""
    try:
        # use_default=False: validation must never fill in defaults; documents are stored as pushed.
        check = fastjsonschema.compile(_json_schema_of(schema), use_default=False)
    except (fastjsonschema.JsonSchemaDefinitionException, re.error) as exc:
        raise SchemaError(f"schema is not valid JSON Schema: {exc}") from None
    key = primary_key_of(schema)

    def validate(doc: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        try:
            check(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            field = ".".join(exc.path[1:]) or "(document)"
            problems.append(f"{field}: {exc.message.removeprefix(exc.name or '').strip()}")
        composed = key.composed(doc) if key.parts else None
        if composed is not None and doc.get(key.field) != composed:
            problems.append(
                f"{key.field}: must be the composite key {composed!r} built from "
                f"{', '.join(key.parts)}"
            )
        return problems

    return validate


def _json_schema_of(schema: dict[str, Any]) -> dict[str, Any]:
    result = {k: v for k, v in schema.items() if k not in _RXDB_TOP_LEVEL_KEYS}
    properties = {
        name: _strip_property(prop) for name, prop in (schema.get("properties") or {}).items()
    }
    properties[DELETED] = {"type": "boolean"}
    result["properties"] = properties
    return result


def _strip_property(prop: Any) -> Any:
    if not isinstance(prop, dict):
        return prop
    result = {k: copy.deepcopy(v) for k, v in prop.items() if k not in _RXDB_PROPERTY_KEYS}
    if isinstance(result.get("properties"), dict):
        result["properties"] = {k: _strip_property(v) for k, v in result["properties"].items()}
    if isinstance(result.get("items"), dict):
        result["items"] = _strip_property(result["items"])
    return result


def nul_path(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) containing U+0000, which PostgreSQL cannot store."""
    if isinstance(value, str):
        return path or "(value)" if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if "\x00" in k:
                return here
            found = nul_path(v, here)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = nul_path(v, f"{path}[{i}]")
            if found:
                return found
    return None


def describe_problems(problems: Iterable[tuple[str, list[str]]]) -> Unprocessable:
    """One 422 naming every offending document id and its fields."""
    listed = [{"id": doc_id, "problems": found} for doc_id, found in problems]
    summary = "; ".join(f"{p['id']!r}: {', '.join(p['problems'])}" for p in listed[:5])
    more = f" (and {len(listed) - 5} more)" if len(listed) > 5 else ""
    return Unprocessable(
        f"{len(listed)} document(s) violate the collection schema: {summary}{more}",
        code="schema_violation",
        details=listed,
    )
