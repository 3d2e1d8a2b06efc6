"""RxDB schemas: primary keys, versions, what syncd can serve, and document validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from syncd.schema import (
    PrimaryKey,
    SchemaError,
    check_servable,
    compile_validator,
    describe_problems,
    nul_path,
    primary_key_of,
    schema_version_of,
)


def todo_schema(**overrides: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "title": "todo",
        "version": 0,
        "primaryKey": "id",
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 100},
            "title": {"type": "string"},
            "done": {"type": "boolean"},
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "owner": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "required": ["id", "title"],
        "additionalProperties": False,
    }
    schema.update(overrides)
    return schema


def with_property(name: str, definition: Any) -> dict[str, Any]:
    schema = todo_schema()
    schema["properties"] = {**schema["properties"], name: definition}
    return schema


def composite_schema(separator: str = "|") -> dict[str, Any]:
    return {
        "version": 0,
        "primaryKey": {"key": "id", "fields": ["user", "day"], "separator": separator},
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 100},
            "user": {"type": "string", "maxLength": 50},
            "day": {"type": "integer"},
        },
        "required": ["id", "user", "day"],
        "additionalProperties": False,
    }


# --- primary keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "key"),
    [
        (todo_schema(), PrimaryKey("id")),
        (
            {"primaryKey": "passportId", "properties": {"passportId": {"type": "string"}}},
            PrimaryKey("passportId"),
        ),
        (composite_schema(), PrimaryKey("id", ("user", "day"), "|")),
        (composite_schema(separator=""), PrimaryKey("id", ("user", "day"), "")),
    ],
)
def test_primary_key_of(schema: dict[str, Any], key: PrimaryKey) -> None:
    assert primary_key_of(schema) == key


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        pytest.param({"primaryKey": "id"}, "no 'properties' object", id="no-properties"),
        pytest.param(
            {"primaryKey": "id", "properties": [{"id": {}}]}, "no 'properties'", id="list-props"
        ),
        pytest.param(
            {"properties": {"id": {"type": "string"}}}, "needs a 'primaryKey'", id="no-primary-key"
        ),
        pytest.param(
            {"primaryKey": 5, "properties": {"id": {"type": "string"}}},
            "needs a 'primaryKey'",
            id="number-primary-key",
        ),
        pytest.param(
            {"primaryKey": "id", "properties": {"other": {"type": "string"}}},
            "primary key field 'id' must be a property of type 'string'",
            id="not-a-property",
        ),
        pytest.param(
            {"primaryKey": "id", "properties": {"id": {"type": "integer"}}},
            "primary key field 'id' must be a property of type 'string'",
            id="not-a-string",
        ),
        pytest.param(
            {"primaryKey": "id", "properties": {"id": True}},
            "primary key field 'id' must be a property of type 'string'",
            id="boolean-property",
        ),
    ],
)
def test_primary_key_of_refuses(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        primary_key_of(schema)


@pytest.mark.parametrize(
    "composite",
    [
        pytest.param({"fields": ["user"], "separator": "|"}, id="no-key"),
        pytest.param({"key": 5, "fields": ["user"], "separator": "|"}, id="key-not-string"),
        pytest.param({"key": "id", "separator": "|"}, id="no-fields"),
        pytest.param({"key": "id", "fields": [], "separator": "|"}, id="empty-fields"),
        pytest.param({"key": "id", "fields": "user", "separator": "|"}, id="fields-string"),
        pytest.param({"key": "id", "fields": ["user", 5], "separator": "|"}, id="field-number"),
        pytest.param({"key": "id", "fields": ["user"]}, id="no-separator"),
        pytest.param({"key": "id", "fields": ["user"], "separator": None}, id="null-separator"),
    ],
)
def test_primary_key_of_refuses_a_malformed_composite_key(composite: dict[str, Any]) -> None:
    schema = {**composite_schema(), "primaryKey": composite}
    with pytest.raises(SchemaError, match="composite primaryKey must be"):
        primary_key_of(schema)


def test_every_composite_key_part_must_be_a_property() -> None:
    schema = composite_schema()
    schema["primaryKey"]["fields"] = ["user", "night"]
    with pytest.raises(SchemaError, match="composite key part 'night' is not a property"):
        primary_key_of(schema)


@pytest.mark.parametrize(
    ("key", "document", "composed"),
    [
        (PrimaryKey("id"), {"id": "a"}, None),
        (PrimaryKey("id", ("user", "day"), "|"), {"user": "ann", "day": 3}, "ann|3"),
        (PrimaryKey("id", ("user", "day"), ""), {"user": "ann", "day": 3}, "ann3"),
        (PrimaryKey("id", ("user", "day"), "--"), {"user": "ann", "day": "x"}, "ann--x"),
        (PrimaryKey("id", ("user", "day"), "|"), {"user": "ann"}, "ann|"),
    ],
)
def test_primary_key_composed(
    key: PrimaryKey, document: dict[str, Any], composed: str | None
) -> None:
    assert key.composed(document) == composed


# --- versions and servability -------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "version"), [({}, 0), ({"version": 0}, 0), ({"version": 7}, 7)])
def test_schema_version_of(schema: dict[str, Any], version: int) -> None:
    assert schema_version_of(schema) == version


@pytest.mark.parametrize("version", [-1, True, False, 1.0, 1.5, "1", None, [1]])
def test_schema_version_must_be_a_non_negative_integer(version: Any) -> None:
    with pytest.raises(SchemaError, match="'version' must be a non-negative integer"):
        schema_version_of({"version": version})


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(todo_schema(), id="todo"),
        pytest.param(composite_schema(), id="composite"),
        pytest.param(todo_schema(attachments=None), id="attachments-null"),
        pytest.param(todo_schema(attachments=False), id="attachments-false"),
    ],
)
def test_check_servable_accepts(schema: dict[str, Any]) -> None:
    check_servable(schema)


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param([todo_schema()], id="array"),
        pytest.param("todo", id="string"),
        pytest.param(None, id="null"),
        pytest.param(todo_schema(type="array"), id="type-array"),
        pytest.param(todo_schema(type=["object"]), id="type-list"),
        pytest.param({k: v for k, v in todo_schema().items() if k != "type"}, id="no-type"),
    ],
)
def test_check_servable_refuses_what_is_not_an_object_schema(schema: Any) -> None:
    with pytest.raises(SchemaError, match='"type": "object"'):
        check_servable(schema)


@pytest.mark.parametrize(
    "attachments",
    [
        pytest.param({"encrypted": False}, id="encrypted-false"),
        pytest.param({"encrypted": True}, id="encrypted-true"),
        pytest.param({}, id="empty-object"),  # truthy in JavaScript: RxDB turns attachments on
        pytest.param(True, id="true"),
    ],
)
def test_check_servable_refuses_attachments(attachments: Any) -> None:
    with pytest.raises(SchemaError, match="attachments are not supported"):
        check_servable(todo_schema(attachments=attachments))


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        pytest.param(todo_schema(primaryKey=None), "needs a 'primaryKey'", id="primary-key"),
        pytest.param(todo_schema(version=-1), "'version'", id="version"),
        pytest.param(
            with_property("n", {"type": "nonsense"}), "not valid JSON Schema", id="unknown-type"
        ),
        pytest.param(
            todo_schema(required="title"), "not valid JSON Schema", id="required-not-a-list"
        ),
        pytest.param(
            todo_schema(required=["id", "title", "undeclared"]),
            "not valid JSON Schema",
            id="required-but-not-allowed",
        ),
        pytest.param(
            with_property("s", {"type": "string", "pattern": "(unclosed"}),
            "not valid JSON Schema",
            id="bad-pattern",
        ),
        pytest.param(
            todo_schema(patternProperties={"[a-": {"type": "string"}}),
            "not valid JSON Schema",
            id="bad-pattern-properties",
        ),
    ],
)
def test_check_servable_refuses_with_the_reason(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        check_servable(schema)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"id": "a", "title": "t"}, id="minimal"),
        pytest.param({"id": "a", "title": "t", "_deleted": False}, id="deleted-false"),
        pytest.param({"id": "a", "title": "t", "_deleted": True}, id="tombstone"),
        pytest.param(
            {"id": "a", "title": "t", "done": True, "n": 3, "tags": ["x"], "owner": {"name": "o"}},
            id="every-field",
        ),
        pytest.param({"id": "a", "title": "t", "n": 3.0}, id="integral-float-is-an-integer"),
    ],
)
def test_a_valid_document_has_no_problems(document: dict[str, Any]) -> None:
    assert compile_validator(todo_schema())(document) == []


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        pytest.param({"id": "a", "title": 5}, "title: must be string", id="wrong-type"),
        pytest.param({"id": "a", "title": "t", "n": 1.5}, "n: must be integer", id="fraction"),
        pytest.param({"id": "a", "title": "t", "done": 1}, "done: must be boolean", id="one"),
        pytest.param(
            {"id": "a", "title": "t", "_deleted": 0}, "_deleted: must be boolean", id="deleted-0"
        ),
        pytest.param(
            {"id": "a", "title": "t", "tags": ["x", 2]}, "tags.1: must be string", id="array-item"
        ),
        pytest.param(
            {"id": "a", "title": "t", "owner": {"name": 1}},
            "owner.name: must be string",
            id="nested-field",
        ),
        pytest.param(
            {"id": "a", "title": "t", "owner": {"name": "o", "age": 3}},
            "owner: must not contain {'age'} properties",
            id="nested-extra",
        ),
        pytest.param(
            {"id": "a", "title": "t", "colour": "red"},
            "(document): must not contain {'colour'} properties",
            id="extra-field",
        ),
        pytest.param(
            {"id": "a"}, "(document): must contain ['title'] properties", id="missing-required"
        ),
        pytest.param(
            {"id": "x" * 101, "title": "t"},
            "id: must be shorter than or equal to 100 characters",
            id="too-long-id",
        ),
    ],
)
def test_problems_name_the_field_path(document: dict[str, Any], problem: str) -> None:
    assert compile_validator(todo_schema())(document) == [problem]


def test_rxdb_keywords_are_not_json_schema_and_are_ignored() -> None:
    schema = todo_schema(
        indexes=["title", ["done", "title"]],
        internalIndexes=[["n"]],
        keyCompression=False,
        encrypted=["secret"],
        version=3,
        crdt={"field": "crdts"},
        description="things to do",
    )
    schema["properties"] = {
        **schema["properties"],
        "title": {"type": "string", "final": True, "maxLength": 20},
        "secret": {"type": "string"},
        "parent": {"type": "string", "ref": "todo"},
        "owner": {
            "type": "object",
            "properties": {"name": {"type": "string", "final": True, "ref": "human"}},
        },
        "history": {
            "type": "array",
            "items": {"type": "object", "properties": {"by": {"type": "string", "ref": "human"}}},
        },
    }
    check_servable(schema)
    validate = compile_validator(schema)
    document = {
        "id": "a",
        "title": "t",
        "secret": "s",
        "parent": "b",
        "owner": {"name": "o"},
        "history": [{"by": "o"}],
    }
    assert validate(document) == []
    # ... while the JSON Schema keywords around them still apply.
    assert validate({**document, "title": "x" * 21}) == [
        "title: must be shorter than or equal to 20 characters"
    ]
    assert validate({**document, "history": [{"by": 5}]}) == ["history.0.by: must be string"]


def test_compiling_leaves_the_schema_untouched() -> None:
    schema = todo_schema(indexes=["title"])
    schema["properties"]["title"]["final"] = True
    before = copy.deepcopy(schema)
    compile_validator(schema)
    assert schema == before


def test_validating_never_changes_the_document() -> None:
    # A document is stored exactly as pushed: filling in a schema ``default`` would make the
    # client's next assumedMasterState differ from the stored copy, and every edit conflict.
    schema = todo_schema()
    schema["properties"] = {
        **schema["properties"],
        "done": {"type": "boolean", "default": False},
        "owner": {"type": "object", "properties": {"name": {"type": "string", "default": "x"}}},
    }
    document = {"id": "a", "title": "t", "owner": {}}
    before = copy.deepcopy(document)
    assert compile_validator(schema)(document) == []
    assert document == before


@pytest.mark.parametrize(
    ("document", "problems"),
    [
        pytest.param({"id": "ann|3", "user": "ann", "day": 3}, [], id="matches"),
        pytest.param(
            {"id": "ann|3", "user": "ann", "day": 3, "_deleted": True}, [], id="tombstone"
        ),
        pytest.param(
            {"id": "ann-3", "user": "ann", "day": 3},
            ["id: must be the composite key 'ann|3' built from user, day"],
            id="wrong-separator",
        ),
        pytest.param(
            {"id": "3|ann", "user": "ann", "day": 3},
            ["id: must be the composite key 'ann|3' built from user, day"],
            id="wrong-order",
        ),
        pytest.param(
            {"id": "bob|3", "user": "ann", "day": 3},
            ["id: must be the composite key 'ann|3' built from user, day"],
            id="stale-key",
        ),
        pytest.param(
            {"id": "ann|3", "user": "ann", "day": "4"},
            ["day: must be integer", "id: must be the composite key 'ann|4' built from user, day"],
            id="schema-and-key-problems-together",
        ),
    ],
)
def test_a_composite_key_must_be_its_parts_joined_by_the_separator(
    document: dict[str, Any], problems: list[str]
) -> None:
    assert compile_validator(composite_schema())(document) == problems


# --- helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("clean", None),
        (5, None),
        (None, None),
        (True, None),
        ({"a": [1, {"b": "ok"}]}, None),
        ("a\x00b", "(value)"),
        ({"a": "x\x00"}, "a"),
        ({"a": {"b": ["ok", "\x00"]}}, "a.b[1]"),
        ([{"k": "\x00"}], "[0].k"),
        ({"a\x00": 1}, "a\x00"),
        ({"a": {"b\x00": None}}, "a.b\x00"),
        ({"first": "\x00", "second": "\x00"}, "first"),
        ({"ok": "fine", "late": ["", "", {"x": "\x00"}]}, "late[2].x"),
    ],
)
def test_nul_path(value: Any, path: str | None) -> None:
    assert nul_path(value) == path


def test_nul_path_starts_from_the_given_path() -> None:
    assert nul_path({"b": "\x00"}, "assumed") == "assumed.b"
    assert nul_path("\x00", "assumed.c") == "assumed.c"


def test_describe_problems_lists_every_document() -> None:
    error = describe_problems([("a", ["x: bad"]), ("b", ["y: bad", "z: bad"])])
    assert error.status == 422
    assert error.code == "schema_violation"
    assert error.details == [
        {"id": "a", "problems": ["x: bad"]},
        {"id": "b", "problems": ["y: bad", "z: bad"]},
    ]
    assert error.message == (
        "2 document(s) violate the collection schema: 'a': x: bad; 'b': y: bad, z: bad"
    )
