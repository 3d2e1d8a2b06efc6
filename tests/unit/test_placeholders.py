"""Deletion placeholders: complete, schema-valid, and holding nothing but the primary key, the
values the filter saw and neutral values (syncd/placeholders.py)."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.placeholders import PlaceholderError, Placeholders, check_placeholders, neutral
from syncd.schema import compile_validator

SCHEMA: dict[str, Any] = {
    "version": 0,
    "primaryKey": "id",
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 100},
        "listId": {"type": "string"},
        "title": {"type": "string", "minLength": 3},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "score": {"type": "number", "exclusiveMinimum": 0},
        "state": {"type": "string", "enum": ["open", "closed"]},
        "done": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "meta": {"type": "object", "properties": {"by": {"type": "string"}}, "required": ["by"]},
        "secret": {"type": "string"},
    },
    "required": ["id", "listId", "title", "priority", "score", "state", "done", "tags", "meta"],
    "additionalProperties": False,
}


def test_a_placeholder_is_valid_and_carries_only_what_the_filter_saw() -> None:
    deletion = Placeholders(SCHEMA, "id").deletion("d1", {"listId": "l1"})
    assert deletion == {
        "id": "d1", "listId": "l1", "title": "___", "priority": 1, "score": 1,
        "state": "open", "done": False, "tags": [""], "meta": {"by": ""}, "_deleted": True,
    }
    assert compile_validator(SCHEMA)(deletion) == []
    assert "secret" not in deletion  # not required: never filled in


def test_a_placeholder_is_recognised_when_a_device_sends_it_back() -> None:
    placeholders = Placeholders(SCHEMA, "id")
    shown = placeholders.deletion("d1", {"listId": "l1"})
    assert placeholders.is_placeholder(dict(shown), ("listId",))
    assert not placeholders.is_placeholder({**shown, "title": "mine"}, ("listId",))
    assert not placeholders.is_placeholder({**shown, "_deleted": False}, ("listId",))
    assert not placeholders.is_placeholder(None, ("listId",))


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ({"type": "integer", "maximum": -3}, -3),
        ({"type": "number", "minimum": 0.5}, 1),
        ({"type": ["string", "null"]}, ""),
        ({"type": "null"}, None),
        ({"const": 7}, 7),
        ({"type": "string", "default": "x"}, "x"),
    ],
)
def test_neutral_values(prop: dict[str, Any], value: Any) -> None:
    assert neutral(prop, "p") == value


def test_filters_are_refused_when_the_schema_rejects_every_placeholder() -> None:
    strict = {**SCHEMA, "properties": {**SCHEMA["properties"],
                                       "title": {"type": "string", "pattern": "^[A-Z]"}}}
    with pytest.raises(PlaceholderError, match="the schema refuses it"):
        check_placeholders(strict, "id", compile_validator(strict), ("listId",))
    check_placeholders(SCHEMA, "id", compile_validator(SCHEMA), ("listId",))


def test_a_required_property_without_a_type_cannot_have_a_placeholder() -> None:
    vague = {**SCHEMA, "properties": {**SCHEMA["properties"], "title": {}}}
    with pytest.raises(PlaceholderError, match="title"):
        check_placeholders(vague, "id", compile_validator(vague), ("listId",))
