"""Pull: full pages while more rows exist, tombstones included, URL-safe checkpoints."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from syncd import checkpoint as checkpoints


def push_new(http: httpx.Client, collection: str, docs: list[dict[str, Any]]) -> None:
    response = http.post(
        f"/api/v1/sync/{collection}", json=[{"newDocumentState": d} for d in docs]
    )
    assert response.status_code == 200 and response.json() == [], response.text


def pull(
    http: httpx.Client, collection: str, cp: dict[str, Any] | None, limit: int
) -> dict[str, Any]:
    # Encoded exactly as a client does: encodeURIComponent(JSON.stringify(checkpoint)).
    query = f"limit={limit}"
    if cp is not None:
        query += "&checkpoint=" + checkpoints.to_query_value(cp)
    response = http.get(f"/api/v1/sync/{collection}?{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_pages_are_full_until_the_last_and_an_empty_page_echoes_the_checkpoint(
    http: httpx.Client, collection: str
) -> None:
    push_new(http, collection, [{"id": f"d{i:02}", "title": "t"} for i in range(25)])
    sizes, cp, ids = [], None, []
    while True:
        page = pull(http, collection, cp, 10)
        if not page["documents"]:
            assert page["checkpoint"] == cp
            break
        sizes.append(len(page["documents"]))
        ids += [d["id"] for d in page["documents"]]
        assert page["checkpoint"] != cp
        cp = page["checkpoint"]
    assert sizes == [10, 10, 5]
    assert sorted(ids) == [f"d{i:02}" for i in range(25)]


def test_first_pull_of_an_empty_collection_returns_a_null_checkpoint(
    http: httpx.Client, collection: str
) -> None:
    assert pull(http, collection, None, 10) == {"documents": [], "checkpoint": None}


def test_tombstones_are_pulled(http: httpx.Client, collection: str) -> None:
    push_new(http, collection, [{"id": "gone", "title": "t", "_deleted": False}])
    cp = pull(http, collection, None, 10)["checkpoint"]
    http.post(f"/api/v1/sync/{collection}", json=[{
        "assumedMasterState": {"id": "gone", "title": "t", "_deleted": False},
        "newDocumentState": {"id": "gone", "title": "t", "_deleted": True},
    }])
    assert pull(http, collection, cp, 10)["documents"] == [
        {"id": "gone", "title": "t", "_deleted": True}
    ]


def test_url_hostile_ids_round_trip_and_checkpoints_are_url_safe(
    http: httpx.Client, collection: str
) -> None:
    hostile = ["a&b#c=d/é", "?x=1&y=2", "100%", "spa ce+plus", "quote\"'", "日本語", "#"]
    push_new(http, collection, [{"id": i, "title": i} for i in hostile])
    cp, received = None, []
    for _ in range(len(hostile) + 1):
        page = pull(http, collection, cp, 1)
        if not page["documents"]:
            break
        received += [d["id"] for d in page["documents"]]
        cp = page["checkpoint"]
        assert set(cp) == {"id", "lwt"}
        # Sent back unencoded (as rxdb-server 15.22.0 does), it still survives a query string.
        assert re.fullmatch(r"[A-Za-z0-9._~-]+", cp["id"])
        assert isinstance(cp["lwt"], int) and 0 < cp["lwt"] < 2**53
    assert sorted(received) == sorted(hostile)


def test_a_checkpoint_from_another_cluster_is_served_from_the_beginning(
    http: httpx.Client, collection: str
) -> None:
    push_new(http, collection, [{"id": "a", "title": "t"}, {"id": "b", "title": "t"}])
    real = pull(http, collection, None, 10)["checkpoint"]
    foreign = {"id": "0123456789abcdef." + real["id"].split(".")[1], "lwt": real["lwt"]}
    assert len(pull(http, collection, foreign, 10)["documents"]) == 2


def test_the_checkpoint_may_be_sent_raw_or_percent_encoded(
    http: httpx.Client, collection: str
) -> None:
    push_new(http, collection, [{"id": "a", "title": "t"}, {"id": "b", "title": "t"}])
    cp = pull(http, collection, None, 1)["checkpoint"]
    raw = f'{{"id":"{cp["id"]}","lwt":{cp["lwt"]}}}'
    for encoded in (quote(raw, safe=""), quote(raw, safe='{}":,')):
        response = http.get(f"/api/v1/sync/{collection}?limit=5&checkpoint={encoded}")
        assert [d["id"] for d in response.json()["documents"]] == ["b"]
