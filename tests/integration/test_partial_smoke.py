"""Partial replication, the basics end to end through the native API (the thorough proofs are in
the other test_partial_* modules)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import orjson

from syncd import checkpoint as checkpoints
from tests.conftest import register

SCHEMA: dict[str, Any] = {
    "version": 0,
    "primaryKey": "id",
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 100},
        "listId": {"type": "string"},
        "title": {"type": "string", "minLength": 1},
        "n": {"type": "integer", "minimum": 1},
    },
    "required": ["id", "listId", "title", "n"],
    "additionalProperties": False,
}
ACCESS = {"filters": {"listId": {}}}


def _pull(http: httpx.Client, name: str, flt: Any, cp: Any, limit: int = 100) -> dict[str, Any]:
    query = f"limit={limit}&filter={quote(orjson.dumps(flt).decode(), safe='')}"
    if cp is not None:
        query += "&checkpoint=" + checkpoints.to_query_value(cp)
    response = http.get(f"/api/v1/sync/{name}?{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _push(http: httpx.Client, name: str, rows: list[dict[str, Any]], flt: Any = None) -> Any:
    url = f"/api/v1/sync/{name}"
    if flt is not None:
        url += f"?filter={quote(orjson.dumps(flt).decode(), safe='')}"
    response = http.post(url, json=rows)
    assert response.status_code == 200, response.text
    return response.json()


def test_move_out_is_a_placeholder_deletion_and_move_in_arrives(
    http: httpx.Client, database_url: str
) -> None:
    name = register(database_url, SCHEMA, access=ACCESS)
    docs = [{"id": f"d{i}", "listId": f"l{i % 3}", "title": "secret", "n": 5} for i in range(9)]
    assert _push(http, name, [{"newDocumentState": d} for d in docs]) == []
    page = _pull(http, name, {"listId": "l1"}, None)
    assert sorted(d["id"] for d in page["documents"]) == ["d1", "d4", "d7"]
    cp = page["checkpoint"]
    moved = {**docs[1], "listId": "l2", "title": "new secret"}
    assert _push(http, name, [{"assumedMasterState": {**docs[1], "_deleted": False},
                               "newDocumentState": moved}]) == []
    came_in = {**docs[2], "listId": "l1"}
    assert _push(http, name, [{"assumedMasterState": {**docs[2], "_deleted": False},
                               "newDocumentState": came_in}]) == []
    page = _pull(http, name, {"listId": "l1"}, cp)
    assert page["documents"] == [
        {"id": "d1", "listId": "l1", "title": "_", "n": 1, "_deleted": True},
        {**came_in, "_deleted": False},
    ]
    assert _pull(http, name, {"listId": "l1"}, page["checkpoint"])["documents"] == []
    # A fresh replication never hears of d1.
    fresh = _pull(http, name, {"listId": "l1"}, None)
    assert sorted(d["id"] for d in fresh["documents"]) == ["d2", "d4", "d7"]


def test_a_bad_filter_is_400_naming_the_declared_fields(
    http: httpx.Client, database_url: str
) -> None:
    name = register(database_url, SCHEMA, access=ACCESS)
    response = http.get(f"/api/v1/sync/{name}?filter=" + quote('{"title": "x"}'))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_filter"
    assert "listId" in response.json()["error"]["message"]
