"""Collection names syncd registers, and the schema versions clients state (syncd/names.py)."""

from __future__ import annotations

import pytest

from syncd.names import collection_name_problem, parse_schema_version


@pytest.mark.parametrize("name", [
    "todos", "a", "human-cards_2", "with$dollar", "camelCase",  # RxDB 15 and 17 collection names
    "Todos.Archive", "2024_notes", "x" * 128,
])
def test_names_rxdb_allows_and_a_path_segment_carries_are_accepted(name: str) -> None:
    assert collection_name_problem(name) is None


@pytest.mark.parametrize("name", [
    "", "bad name/../x", "a/b", "a b", "a\tb", "..", ".", "a..b", "50%off", "-x", "_x", ".x",
    "x" * 129, "café", "a?b", "a#b", "a\\b",
])
def test_names_no_url_path_segment_reaches_as_is_are_refused(name: str) -> None:
    problem = collection_name_problem(name)
    assert problem is not None
    assert "letters, digits, '_', '$', '-' and '.'" in problem


@pytest.mark.parametrize(("raw", "expected"), [
    (None, None), ("", None), ("0", 0), ("1", 1), (" 12 ", 12), ("999999999", 999999999),
])
def test_stated_schema_versions(raw: str | None, expected: int | None) -> None:
    assert parse_schema_version(raw, "where") == expected


@pytest.mark.parametrize("raw", ["-1", "01", "1.0", "1e3", "one", "1000000000", "0x1"])
def test_what_is_not_a_schema_version(raw: str) -> None:
    with pytest.raises(ValueError, match="where must be the client's RxDB schema version"):
        parse_schema_version(raw, "where")
