"""`syncd purge`: only tombstones older than the window go; live documents never do."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.conftest import TODO_SCHEMA, register
from tests.support import SyncdProcess


def _push(http: httpx.Client, collection: str, rows: list[dict[str, object]]) -> None:
    assert http.post(f"/api/v1/sync/{collection}", json=rows).json() == []


def _delete(http: httpx.Client, collection: str, doc_id: str) -> None:
    live = {"id": doc_id, "title": "t", "_deleted": False}
    _push(http, collection, [{"assumedMasterState": live,
                              "newDocumentState": {**live, "_deleted": True}}])


def _ids(http: httpx.Client, collection: str) -> set[str]:
    return {d["id"] for d in http.get(f"/api/v1/sync/{collection}").json()["documents"]}


def test_purge_removes_only_old_tombstones_of_the_chosen_collection(
    http: httpx.Client, syncd: SyncdProcess, database_url: str
) -> None:
    mine, other = register(database_url, TODO_SCHEMA), register(database_url, TODO_SCHEMA)
    for collection in (mine, other):
        _push(http, collection, [{"newDocumentState": {"id": i, "title": "t"}}
                                 for i in ("keep", "old", "new")])
        _delete(http, collection, "old")
    time.sleep(2.0)
    for collection in (mine, other):
        _delete(http, collection, "new")

    env = {**os.environ, "SYNCD_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "purge", "--older-than-days", str(1.0 / 86400),
         "--collection", mine],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "purged 1 tombstone" in result.stdout
    assert _ids(http, mine) == {"keep", "new"}  # the young tombstone stays, live docs stay
    assert _ids(http, other) == {"keep", "old", "new"}  # another collection is untouched


def test_purge_needs_a_positive_window(database_url: str) -> None:
    env = {**os.environ, "SYNCD_DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "-m", "syncd", "purge", "--older-than-days", "0"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "positive" in result.stderr
