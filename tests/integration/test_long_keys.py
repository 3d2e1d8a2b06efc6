"""Ids and partitions longer than PostgreSQL's primary key index can hold (syncd/keys.py) are
refused with a precise 4xx on every way in, never a 500, and nothing is written."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from syncd.keys import MAX_ID_BYTES, MAX_PARTITION_BYTES
from tests.authworld import AUDIENCE, HS_SECRET, ISSUER
from tests.conftest import TODO_SCHEMA, register
from tests.integration.test_bad_input import assert_error, stored
from tests.integration.test_rxdb_ws import RxClient, token, ws_url
from tests.support import SyncdProcess

# The key without maxLength: only syncd's own limit stands between an id and the index.
UNBOUNDED_KEY_SCHEMA: dict[str, Any] = {
    **TODO_SCHEMA, "properties": {**TODO_SCHEMA["properties"], "id": {"type": "string"}},
}


def random_text(size: int) -> str:
    """``size`` ASCII characters that PostgreSQL cannot compress (compressible text would fit
    in the index entry compressed, and hide the limit)."""
    return secrets.token_urlsafe(size)[:size]


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[SyncdProcess]:
    """A server of its own, so that its log is this module's."""
    process = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "jwt",
        "SYNCD_JWT_ALGORITHMS": "HS256",
        "SYNCD_JWT_SECRET": HS_SECRET,
        "SYNCD_JWT_ISSUER": ISSUER,
        "SYNCD_JWT_AUDIENCE": AUDIENCE,
    })
    yield process
    process.stop()


@pytest.fixture()
def unbounded(database_url: str) -> str:
    return register(database_url, UNBOUNDED_KEY_SCHEMA)


@pytest.fixture()
def owned(database_url: str) -> str:
    return register(database_url, UNBOUNDED_KEY_SCHEMA, access={"partition_claim": "sub"})


def bearer(sub: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub)}"}


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"newDocumentState": {"id": i, "title": "t", "_deleted": False}} for i in ids]


def assert_names_length_and_limit(error: dict[str, Any], size: int, row: int = 0) -> None:
    assert error["code"] == "schema_violation", error
    assert [(d["id"], len(d["problems"])) for d in error["details"]] == [(f"row {row}", 1)]
    problem = error["details"][0]["problems"][0]
    assert f"has {size} bytes" in problem and f"at most {MAX_ID_BYTES} bytes" in problem, problem
    assert f"has {size} bytes" in error["message"]


async def assert_serving_and_clean(server: SyncdProcess, db: asyncpg.Connection,
                                   collection: str) -> None:
    assert await stored(db, collection) == 0  # nothing of the refused pushes was written
    url = f"{server.url}/api/v1/sync/{collection}"
    pushed = httpx.post(url, json=rows("fine"), headers=bearer(), timeout=30)
    assert pushed.status_code == 200 and pushed.json() == [], pushed.text
    assert [d["id"] for d in httpx.get(url, headers=bearer(), timeout=30).json()["documents"]] == [
        "fine"]
    assert "Traceback" not in server.log() and "internal_error" not in server.log()


@pytest.mark.parametrize("size", [3 * 1024, 8 * 1024])
async def test_over_long_ids_are_422_on_every_way_in(
    server: SyncdProcess, db: asyncpg.Connection, unbounded: str, size: int
) -> None:
    long_id = random_text(size)
    # The native API, with a valid row in the same batch: the whole batch is refused.
    native = httpx.post(f"{server.url}/api/v1/sync/{unbounded}", headers=bearer(), timeout=30,
                        json=rows("ok", long_id))
    error = assert_error(native, 422, "schema_violation", details=True)
    assert_names_length_and_limit(error, size, row=1)

    # rxdb-server's push: its client cancels on 403 (docs/rxdb-compat.md), same envelope.
    rxdb = httpx.post(f"{server.url}/rxdb/{unbounded}/0/push", headers=bearer(), timeout=30,
                      json=rows(long_id))
    assert_names_length_and_limit(assert_error(rxdb, 403, "schema_violation", details=True), size)

    # RxDB's websocket: answered with result null and the error.
    async with websockets.connect(ws_url(server, f"?access_token={token()}")) as ws:
        answer = await RxClient(ws).call(unbounded, "masterWrite", rows(long_id))
        assert answer["result"] is None and answer["error"]["status"] == 422, answer
        assert_names_length_and_limit(answer["error"], size)

    await assert_serving_and_clean(server, db, unbounded)


async def test_multibyte_ids_are_measured_in_utf8_bytes(
    server: SyncdProcess, db: asyncpg.Connection, unbounded: str
) -> None:
    long_id = "é" * (MAX_ID_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    native = httpx.post(f"{server.url}/api/v1/sync/{unbounded}", headers=bearer(), timeout=30,
                        json=rows(long_id))
    error = assert_error(native, 422, "schema_violation", details=True)
    assert_names_length_and_limit(error, MAX_ID_BYTES + 2)
    await assert_serving_and_clean(server, db, unbounded)


async def test_the_longest_id_in_the_longest_partition_is_stored(
    server: SyncdProcess, db: asyncpg.Connection, owned: str
) -> None:
    """The limits are safe: incompressible values at both limits fit the index together."""
    partition = random_text(MAX_PARTITION_BYTES)
    longest = random_text(MAX_ID_BYTES)
    headers = {"Authorization": f"Bearer {token(partition)}"}
    url = f"{server.url}/api/v1/sync/{owned}"
    pushed = httpx.post(url, headers=headers, json=rows(longest), timeout=30)
    assert pushed.status_code == 200 and pushed.json() == [], pushed.text
    pulled = httpx.get(url, headers=headers, timeout=30).json()
    assert [d["id"] for d in pulled["documents"]] == [longest]


@pytest.mark.parametrize("size", [MAX_PARTITION_BYTES + 1, 3 * 1024])
async def test_a_partition_claim_too_long_to_store_is_403(
    server: SyncdProcess, db: asyncpg.Connection, owned: str, size: int
) -> None:
    too_long = random_text(size)
    headers = {"Authorization": f"Bearer {token(too_long)}"}
    url = f"{server.url}/api/v1/sync/{owned}"
    for response in (httpx.post(url, headers=headers, json=rows("x"), timeout=30),
                     httpx.get(url, headers=headers, timeout=30)):
        error = assert_error(response, 403, "partition_too_long")
        assert f"{size} bytes" in error["message"]
        assert f"at most {MAX_PARTITION_BYTES}" in error["message"]
    await assert_serving_and_clean(server, db, owned)
