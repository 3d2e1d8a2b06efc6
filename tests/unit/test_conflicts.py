"""Push rows: shape checks (400), document checks (422) and normalisation, without a database."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from syncd.conflicts import PushRow, parse_push_rows, with_deleted_flag
from syncd.exceptions import BadRequest, Unprocessable
from syncd.schema import compile_validator

PK = "id"
MAX_ROWS = 100

TODO_SCHEMA: dict[str, Any] = {
    "title": "todo",
    "version": 0,
    "primaryKey": "id",
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 100},
        "title": {"type": "string"},
        "done": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["id", "title"],
    "additionalProperties": False,
}


def accept_all(doc: dict[str, Any]) -> list[str]:
    return []


def parse(body: Any, *, max_rows: int = MAX_ROWS) -> list[PushRow]:
    return parse_push_rows(body, PK, accept_all, max_rows=max_rows)


def doc(doc_id: str = "a", **fields: Any) -> dict[str, Any]:
    return {PK: doc_id, "title": "t", **fields}


def bad_request(body: Any, *, max_rows: int = MAX_ROWS) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse(body, max_rows=max_rows)
    assert caught.value.status == 400
    return caught.value


def unprocessable(body: Any) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        parse(body)
    assert caught.value.status == 422
    assert caught.value.code == "schema_violation"
    return caught.value


def problems_of(error: Unprocessable) -> dict[str, list[str]]:
    details: list[dict[str, Any]] = error.details
    return {entry["id"]: entry["problems"] for entry in details}


# --- body and row shapes (400) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "described"),
    [
        ({"newDocumentState": {"id": "a"}}, "an object"),
        ("[]", "a string"),
        (None, "null"),
        (5, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
    ],
)
def test_a_body_that_is_not_an_array_is_refused(body: Any, described: str) -> None:
    error = bad_request(body)
    assert error.code == "invalid_push_body"
    assert error.message.endswith(f"got {described}")


def test_an_empty_push_is_no_rows() -> None:
    assert parse([]) == []


@pytest.mark.parametrize(("count", "max_rows"), [(0, 0), (1, 1), (3, 3), (3, 10)])
def test_up_to_max_rows_are_accepted(count: int, max_rows: int) -> None:
    body = [{"newDocumentState": doc(f"d{i}")} for i in range(count)]
    assert len(parse(body, max_rows=max_rows)) == count


@pytest.mark.parametrize(("count", "max_rows"), [(1, 0), (4, 3), (101, 100)])
def test_more_than_max_rows_is_refused_before_looking_at_rows(count: int, max_rows: int) -> None:
    body: list[Any] = ["not a row"] * count
    error = bad_request(body, max_rows=max_rows)
    assert error.code == "too_many_rows"
    assert f"push has {count} rows; at most {max_rows}" in error.message


@pytest.mark.parametrize(
    ("row", "described"),
    [
        (5, "a number"),
        ("row", "a string"),
        (None, "null"),
        ([doc()], "an array"),
        (True, "a boolean"),
    ],
)
def test_a_row_that_is_not_an_object_is_refused_with_its_index(row: Any, described: str) -> None:
    error = bad_request([{"newDocumentState": doc("ok")}, row])
    assert error.code == "invalid_push_row"
    assert error.message.startswith("push row 1 must be an object")
    assert error.message.endswith(f"got {described}")


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({}, id="missing"),
        pytest.param({"assumedMasterState": doc()}, id="only-assumed"),
        pytest.param({"newDocumentState": None}, id="null"),
        pytest.param({"newDocumentState": [doc()]}, id="array"),
        pytest.param({"newDocumentState": "a"}, id="string"),
        pytest.param({"newdocumentstate": doc()}, id="wrong-case"),
    ],
)
def test_a_row_needs_a_new_document_state_object(row: dict[str, Any]) -> None:
    error = bad_request([row])
    assert error.code == "invalid_push_row"
    assert 'push row 0 must be an object with a "newDocumentState" object' in error.message


@pytest.mark.parametrize(
    ("assumed", "described"),
    [
        ([doc()], "an array"),
        ("a", "a string"),
        (0, "a number"),
        (False, "a boolean"),
        (True, "a boolean"),
    ],
)
def test_assumed_master_state_must_be_an_object_null_or_absent(
    assumed: Any, described: str
) -> None:
    error = bad_request([{"assumedMasterState": assumed, "newDocumentState": doc()}])
    assert error.code == "invalid_push_row"
    assert error.message.startswith('push row 0: "assumedMasterState" must be an object')
    assert error.message.endswith(f"got {described}")


def test_shape_problems_are_reported_before_document_problems() -> None:
    body = [{"newDocumentState": doc("a", _deleted="yes")}, {"newDocumentState": 5}]
    assert bad_request(body).code == "invalid_push_row"


def test_a_duplicate_id_in_one_batch_is_refused() -> None:
    body = [
        {"newDocumentState": doc("a")},
        {"newDocumentState": doc("b")},
        {"newDocumentState": doc("a", title="second")},
    ]
    error = bad_request(body)
    assert error.code == "duplicate_id"
    assert "'a' appears twice" in error.message


# --- document problems (422) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "new",
    [
        pytest.param({"title": "t"}, id="missing"),
        pytest.param({PK: None}, id="null"),
        pytest.param({PK: 5}, id="number"),
        pytest.param({PK: ""}, id="empty"),
        pytest.param({PK: ["a"]}, id="array"),
        pytest.param({PK: {"a": 1}}, id="object"),
        pytest.param({PK: True}, id="boolean"),
    ],
)
def test_the_primary_key_must_be_a_non_empty_string(new: dict[str, Any]) -> None:
    error = unprocessable([{"newDocumentState": doc("ok")}, {"newDocumentState": new}])
    assert problems_of(error) == {"row 1": ["id: the primary key is missing or not a string"]}


def test_the_primary_key_field_is_the_collections_not_always_id() -> None:
    rows = parse_push_rows(
        [{"newDocumentState": {"passportId": "p1", "id": 5}}], "passportId", accept_all, max_rows=1
    )
    assert rows[0].id == "p1"
    with pytest.raises(Unprocessable) as caught:
        parse_push_rows([{"newDocumentState": {"id": "a"}}], "passportId", accept_all, max_rows=1)
    assert problems_of(caught.value) == {
        "row 0": ["passportId: the primary key is missing or not a string"]
    }


@pytest.mark.parametrize("deleted", [1, 0, "true", "false", None, [], {}])
def test_deleted_must_be_a_boolean(deleted: Any) -> None:
    error = unprocessable([{"newDocumentState": doc("a", _deleted=deleted)}])
    assert problems_of(error) == {"a": ["_deleted: must be true or false"]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("_meta", {"lwt": 1700000000000.01}),
        ("_rev", "1-abc"),
        ("_attachments", {}),
        ("_meta", None),
    ],
)
def test_rxdb_internal_fields_must_not_be_pushed(field: str, value: Any) -> None:
    error = unprocessable([{"newDocumentState": doc("a", **{field: value})}])
    assert problems_of(error) == {
        "a": [f"{field}: is RxDB-internal and must not be sent to the server"]
    }


@pytest.mark.parametrize(
    ("new", "path"),
    [
        pytest.param(doc("a", title="x\x00y"), "title", id="top-level-value"),
        pytest.param(doc("a", note={"deep": ["ok", "\x00"]}), "note.deep[1]", id="nested-value"),
        pytest.param(doc("a", **{"k\x00": 1}), "k\x00", id="top-level-key"),
        pytest.param(doc("a", note={"in\x00ner": True}), "note.in\x00ner", id="nested-key"),
        pytest.param(doc("a\x00"), "id", id="primary-key"),
    ],
)
def test_nul_characters_in_the_new_state_are_refused(new: dict[str, Any], path: str) -> None:
    error = unprocessable([{"newDocumentState": new}])
    assert problems_of(error) == {
        new[PK]: [f"{path}: contains \\u0000, which PostgreSQL cannot store"]
    }


@pytest.mark.parametrize(
    ("assumed", "path"),
    [
        pytest.param(doc("a", title="\x00"), "title", id="value"),
        pytest.param(doc("a", tags=["x", "y\x00"]), "tags[1]", id="value-in-array"),
        pytest.param(doc("a", **{"\x00": 1}), "\x00", id="key"),
        pytest.param(doc("a", note={"k\x00": {}}), "note.k\x00", id="nested-key"),
    ],
)
def test_nul_characters_in_the_assumed_state_are_refused(
    assumed: dict[str, Any], path: str
) -> None:
    error = unprocessable([{"assumedMasterState": assumed, "newDocumentState": doc("a")}])
    assert problems_of(error) == {"a": [f"assumedMasterState.{path}: contains \\u0000"]}


@pytest.mark.parametrize(
    "assumed",
    [
        pytest.param(doc("b"), id="other-id"),
        pytest.param({"title": "t"}, id="missing-id"),
        pytest.param({PK: None}, id="null-id"),
    ],
)
def test_the_assumed_state_must_be_of_the_same_document(assumed: dict[str, Any]) -> None:
    error = unprocessable([{"assumedMasterState": assumed, "newDocumentState": doc("a")}])
    assert problems_of(error) == {"a": ["assumedMasterState.id: differs from newDocumentState's"]}


def test_schema_problems_come_from_the_validator_with_the_document_id() -> None:
    seen: list[dict[str, Any]] = []

    def validate(document: dict[str, Any]) -> list[str]:
        seen.append(document)
        return [] if isinstance(document.get("title"), str) else ["title: must be string"]

    new_ok, new_bad = doc("ok"), doc("bad", title=5)
    with pytest.raises(Unprocessable) as caught:
        parse_push_rows(
            [
                {"newDocumentState": new_ok, "assumedMasterState": doc("ok", title=7)},
                {"newDocumentState": new_bad},
            ],
            PK,
            validate,
            max_rows=10,
        )
    assert problems_of(caught.value) == {"bad": ["title: must be string"]}
    assert seen == [new_ok, new_bad]  # only new states are validated, never the assumed ones


def test_every_problem_of_a_batch_is_reported_at_once() -> None:
    body = [
        {"newDocumentState": doc("good")},
        {"newDocumentState": doc("d1", _deleted="no")},
        {"newDocumentState": {"title": "no id"}},
        {"newDocumentState": doc("d3", _rev="1-x", _meta={"lwt": 1})},
        {"newDocumentState": doc("d4", title="\x00", _deleted=1)},
        {"assumedMasterState": doc("zz", title="\x00"), "newDocumentState": doc("d5")},
        {"newDocumentState": doc("also-good")},
    ]
    error = unprocessable(body)
    assert error.details == [
        {"id": "d1", "problems": ["_deleted: must be true or false"]},
        {"id": "row 2", "problems": ["id: the primary key is missing or not a string"]},
        {
            "id": "d3",
            "problems": [
                "_meta: is RxDB-internal and must not be sent to the server",
                "_rev: is RxDB-internal and must not be sent to the server",
            ],
        },
        {
            "id": "d4",
            "problems": [
                "title: contains \\u0000, which PostgreSQL cannot store",
                "_deleted: must be true or false",
            ],
        },
        {
            "id": "d5",
            "problems": [
                "assumedMasterState.id: differs from newDocumentState's",
                "assumedMasterState.title: contains \\u0000",
            ],
        },
    ]
    assert error.message.startswith("5 document(s) violate the collection schema: ")
    for name in ("'d1'", "'row 2'", "'d3'", "'d4'", "'d5'", "_meta", "_rev", "_deleted", "title"):
        assert name in error.message
    assert "good" not in error.message


def test_a_large_batch_of_problems_is_summarised_but_detailed_in_full() -> None:
    body = [{"newDocumentState": doc(f"d{i}", _deleted="x")} for i in range(8)]
    error = unprocessable(body)
    assert len(error.details) == 8
    assert error.message.startswith("8 document(s) violate")
    assert error.message.endswith(" (and 3 more)")
    assert "'d4'" in error.message
    assert "'d5'" not in error.message


def test_documents_are_checked_against_the_collection_schema() -> None:
    validate = compile_validator(TODO_SCHEMA)
    body = [
        {"newDocumentState": doc("ok", done=True, _deleted=False)},
        {"newDocumentState": doc("typo", done="yes")},
        {"newDocumentState": doc("extra", colour="red")},
        {"newDocumentState": {"id": "untitled"}},
        {"newDocumentState": doc("tags", tags=["a", 2])},
    ]
    with pytest.raises(Unprocessable) as caught:
        parse_push_rows(body, PK, validate, max_rows=10)
    problems = problems_of(caught.value)
    assert list(problems) == ["typo", "extra", "untitled", "tags"]
    assert problems["typo"] == ["done: must be boolean"]
    assert "colour" in problems["extra"][0]
    assert "title" in problems["untitled"][0]
    assert problems["tags"] == ["tags.1: must be string"]


# --- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"newDocumentState": doc("a")}, id="absent"),
        pytest.param({"assumedMasterState": None, "newDocumentState": doc("a")}, id="null"),
    ],
)
def test_absent_and_null_assumed_state_mean_the_document_is_new(row: dict[str, Any]) -> None:
    assert parse([row]) == [PushRow("a", None, {**doc("a"), "_deleted": False})]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (doc("a"), {**doc("a"), "_deleted": False}),
        (doc("a", _deleted=False), {**doc("a"), "_deleted": False}),
        (doc("a", _deleted=True), {**doc("a"), "_deleted": True}),
    ],
)
def test_deleted_is_made_explicit_on_new_and_assumed_states(
    given: dict[str, Any], stored: dict[str, Any]
) -> None:
    [row] = parse([{"assumedMasterState": given, "newDocumentState": given}])
    assert row.new == stored
    assert row.assumed == stored
    assert row.new["_deleted"] is stored["_deleted"]  # a real bool, never 0 or 1


def test_parsing_leaves_the_request_body_untouched() -> None:
    body = [{"assumedMasterState": doc("a", n=1), "newDocumentState": doc("a", n=2)}]
    before = copy.deepcopy(body)
    [row] = parse(body)
    assert body == before
    assert row.new == {**doc("a", n=2), "_deleted": False}
    assert row.assumed == {**doc("a", n=1), "_deleted": False}


def test_rows_keep_the_order_of_the_batch() -> None:
    body = [{"newDocumentState": doc(name)} for name in ("c", "a", "b")]
    assert [row.id for row in parse(body)] == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ({}, {"_deleted": False}),
        ({"id": "a"}, {"id": "a", "_deleted": False}),
        ({"id": "a", "_deleted": True}, {"id": "a", "_deleted": True}),
        ({"id": "a", "_deleted": False}, {"id": "a", "_deleted": False}),
    ],
)
def test_with_deleted_flag(given: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    snapshot = copy.deepcopy(given)
    assert with_deleted_flag(given) == expected
    assert given == snapshot


def test_rows_carry_the_json_text_the_database_receives() -> None:
    body = [
        {"assumedMasterState": doc("a", n=1), "newDocumentState": doc("a", n=2)},
        {"newDocumentState": doc("b")},
    ]
    first, second = parse(body)
    assert first.new_json is not None and orjson.loads(first.new_json) == first.new
    assert first.assumed_json is not None and orjson.loads(first.assumed_json) == first.assumed
    assert second.assumed is None and second.assumed_json is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\\u0000", id="backslash-u0000"),
        pytest.param("\\\\u0000", id="two-backslashes"),
        pytest.param("u0000", id="plain"),
    ],
)
def test_text_that_only_looks_like_an_escaped_nul_is_accepted(text: str) -> None:
    # The JSON text of such a string holds "\u0000" after an escaped backslash: the quick
    # check on the text must fall back to the exact walk, which finds no U+0000.
    new = doc("a", title=text, **{text: text})
    [row] = parse([{"assumedMasterState": new, "newDocumentState": new}])
    assert row.new == {**new, "_deleted": False}


def test_a_document_orjson_cannot_write_is_left_for_the_store_to_refuse() -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = [deep]
    [row] = parse([{"newDocumentState": doc("a", note=deep)}])
    assert row.new_json is None
