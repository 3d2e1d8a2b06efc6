"""Partial replication's pure rules: declarations, selectors, the effective filter, matching,
and the filter state a checkpoint carries (syncd/filters.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from syncd import checkpoint as checkpoints
from syncd.auth.identity import Identity
from syncd.exceptions import BadRequest, Forbidden
from syncd.filters import (
    Filter,
    FilterDeclarationError,
    FilterField,
    FilterState,
    check_declaration,
    decode_state,
    effective,
    encode_state,
    forbidden_values,
    matches,
    parse_declaration,
    parse_selector,
    within,
)

DECLARED = {"listId": FilterField("listId"), "region": FilterField("region", "regions"),
            "n": FilterField("n")}
SCHEMA: dict[str, Any] = {"properties": {
    "listId": {"type": "string"}, "region": {"type": "string"}, "n": {"type": "integer"},
    "tags": {"type": "array"}, "flag": {"type": ["boolean", "null"]},
}}


def user(**claims: Any) -> Identity:
    return Identity(subject="u1", claims=claims)


# --- declaration ----------------------------------------------------------------------------


def test_a_declaration_names_fields_and_optional_claims() -> None:
    assert parse_declaration({"listId": {}, "region": {"claim": "regions"}}) == {
        "listId": FilterField("listId"), "region": FilterField("region", "regions"),
    }
    assert parse_declaration(None) == {}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (["listId"], "must be an object"),
        ({"a.b": {}}, "top-level field name"),
        ({"x'; drop": {}}, "top-level field name"),
        ({"listId": {"claim": ""}}, "non-empty string"),
        ({"listId": {"index": True}}, "must be {}"),
        ({f"f{i}": {} for i in range(9)}, "at most 8"),
    ],
)
def test_a_bad_declaration_says_what_is_wrong(raw: Any, problem: str) -> None:
    with pytest.raises(FilterDeclarationError, match=re.escape(problem)):
        parse_declaration(raw)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"missing": FilterField("missing")}, "not a top-level property"),
        ({"tags": FilterField("tags")}, "must have type string"),
        ({"n": FilterField("n", "ns")}, "must be of type string"),
    ],
)
def test_declared_fields_must_be_scalar_properties(
    fields: dict[str, FilterField], problem: str
) -> None:
    with pytest.raises(FilterDeclarationError, match=problem):
        check_declaration(fields, SCHEMA)


def test_a_nullable_boolean_is_filterable() -> None:
    check_declaration({"flag": FilterField("flag")}, SCHEMA)  # null is not a value to filter on
    with pytest.raises(FilterDeclarationError):
        check_declaration({"flag": FilterField("flag")}, {"properties": {"flag": {}}})


# --- selector -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"listId": "l1"}', (("listId", ('"l1"',)),)),
        ('{"listId": {"$eq": "l1"}}', (("listId", ('"l1"',)),)),
        ('{"listId": {"$in": ["l2", "l1", "l2"]}, "n": 1.0}',
         (("listId", ('"l1"', '"l2"')), ("n", ("1",)))),
        ('{"n": {"$in": [1, 2.5, true]}}', (("n", ("1", "2.5", "true")),)),
        ("{}", None),
        ("", None),
        (None, None),
    ],
)
def test_selectors_become_canonical_filters(raw: str | None, expected: Filter | None) -> None:
    assert parse_selector(raw, DECLARED) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("listId=l1", "is not JSON"),
        ('["l1"]', "a JSON object"),
        ('{"title": "x"}', "'title' is not a declared filter field"),
        ('{"listId": {"$gt": "a"}}', "only $eq and $in"),
        ('{"listId": {"$in": []}}', "non-empty array"),
        ('{"listId": {"$in": "l1"}}', "non-empty array"),
        ('{"listId": {"$eq": "a", "$in": ["b"]}}', "only $eq and $in"),
        ('{"listId": null}', "strings, numbers or booleans"),
        ('{"listId": {"a": 1}}', "only $eq and $in"),
        ('{"listId": ["a"]}', "strings, numbers or booleans"),
        ('{"listId": {"$in": ' + str(list(range(101))) + "}}", "at most 100"),
        ('{"listId": "' + "x" * 600 + '"}', "at most 512 bytes"),
    ],
)
def test_a_bad_selector_is_400_naming_the_declared_fields(raw: str, problem: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_selector(raw, DECLARED)
    assert caught.value.code == "invalid_filter"
    assert problem in caught.value.message
    assert "Filterable fields: listId, n, region" in caught.value.message


def test_a_filter_on_a_collection_without_declared_fields_says_so() -> None:
    with pytest.raises(BadRequest, match="declares none"):
        parse_selector('{"listId": "l1"}', {})


# --- effective filter -----------------------------------------------------------------------


def test_claim_bound_fields_apply_to_every_replication() -> None:
    assert effective(None, DECLARED, user(regions=["south", "north"])) == (
        ("region", ('"north"', '"south"')),
    )
    assert effective(None, DECLARED, user(regions="north east")) == (
        ("region", ('"east"', '"north"')),
    )
    assert effective(None, DECLARED, user()) == (("region", ()),)  # no claim: nothing
    assert effective(None, {"listId": FilterField("listId")}, user()) is None


def test_a_service_key_is_not_bound_by_claims() -> None:
    service = Identity(subject="api", service=True, acting_partition="p")
    flt = parse_selector('{"region": "west"}', DECLARED)
    assert effective(flt, DECLARED, service) == flt
    assert effective(None, DECLARED, service) is None


def test_a_value_outside_the_claim_is_403_for_a_fresh_replication_only() -> None:
    flt = parse_selector('{"region": {"$in": ["north", "west"]}}', DECLARED)
    with pytest.raises(Forbidden) as caught:
        effective(flt, DECLARED, user(regions=["north"]), fresh=True)
    assert caught.value.code == "forbidden_filter_value"
    assert '"west"' in caught.value.message
    # With a checkpoint it is a revocation: west is dropped (and leaves the device).
    assert effective(flt, DECLARED, user(regions=["north"])) == (("region", ('"north"',)),)


def test_matches_decides_as_the_sql_does() -> None:
    flt = parse_selector('{"listId": {"$in": ["a", "b"]}, "n": 1}', DECLARED)
    assert matches(flt, {"listId": "a", "n": 1.0})
    assert not matches(flt, {"listId": "a", "n": True})  # jsonb: true is not 1
    assert not matches(flt, {"listId": "c", "n": 1})
    assert not matches(flt, {"n": 1})
    assert not matches(flt, {"listId": None, "n": 1})
    assert not matches(flt, {"listId": ["a"], "n": 1})
    assert matches(None, {})
    assert not matches((("region", ()),), {"region": "x"})


def test_within_is_a_narrowing() -> None:
    wide = parse_selector('{"listId": {"$in": ["a", "b"]}}', DECLARED)
    narrow = parse_selector('{"listId": "a", "n": 3}', DECLARED)
    assert within(narrow, wide)
    assert not within(wide, narrow)
    assert within(narrow, None)
    assert not within(None, wide)
    assert within((("listId", ()),), wide)


def test_pushed_values_of_claim_bound_fields_must_be_in_the_claim() -> None:
    docs: list[dict[str, Any]] = [{"region": "north"}, {"region": "north", "listId": "x"}]
    assert forbidden_values(DECLARED, user(regions=["north"]), docs) is None
    problem = forbidden_values(DECLARED, user(regions=["south"]), docs)
    assert problem is not None and "region" in problem and "'regions'" in problem
    missing = forbidden_values(DECLARED, user(regions=["north"]), [{"listId": "x"}])
    assert missing is not None and "region is missing" in missing
    service = Identity(subject="api", service=True, acting_partition="p")
    assert forbidden_values(DECLARED, service, [{"region": "west"}]) is None


# --- the checkpoint's filter state -----------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        FilterState((("listId", ('"l1"',)),)),
        FilterState((("listId", ('"a"', '"b"')), ("n", ("1",))), floor=733),
        FilterState(None, 5, (("region", ()),), (900, "doc/1 é")),
        FilterState((("listId", ('"l1"',)),), 0, None, (12, "")),
    ],
)
def test_filter_states_survive_the_checkpoint_url_safely(state: FilterState) -> None:
    token = encode_state(state)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    wire = checkpoints.encode(checkpoints.Position(10, 20), "ab12", token)
    position, found = checkpoints.decode_with_state(wire, "ab12")
    assert position == checkpoints.Position(10, 20)
    assert found is not None and decode_state(found) == state


@pytest.mark.parametrize("token", ["!!", "e30", "W10", "eyJmIjoxfQ", "eyJmIjp7fSwiciI6WzFdfQ"])
def test_a_damaged_filter_state_is_an_invalid_checkpoint(token: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_state(token)
    assert caught.value.code == "invalid_checkpoint"


def test_a_checkpoint_of_another_cluster_loses_its_filter_state_too() -> None:
    wire = checkpoints.encode(checkpoints.Position(10, 20), "ab12", encode_state(FilterState(None)))
    assert checkpoints.decode_with_state(wire, "ffff") == (checkpoints.ORIGIN, None)


def test_an_effective_filter_too_large_for_a_checkpoint_is_refused() -> None:
    many = user(regions=[f"region-{i:04}" for i in range(300)])
    with pytest.raises(BadRequest) as caught:
        effective(None, DECLARED, many)
    assert caught.value.code == "filter_too_large"
    chosen = parse_selector('{"region": {"$in": ["region-0001", "region-0002"]}}', DECLARED)
    assert effective(chosen, DECLARED, many) == (("region", ('"region-0001"', '"region-0002"')),)
