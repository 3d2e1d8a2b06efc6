"""Bad input against the real server.

Every case gets its exact status and the error envelope of DESIGN.md §3 with its specific code,
writes nothing (checked in ``syncd_documents``), never gets a 500, and leaves the server serving:
a valid push and pull still work afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import SyncdProcess

SMALL_BODY_LIMIT = 65_536
PULL_MAX_LIMIT = 10_000  # Settings.pull_max_limit's default
JSON_HEADERS = {"content-type": "application/json"}

Doc = dict[str, Any]


def sync_path(collection: str) -> str:
    return f"/api/v1/sync/{collection}"


def todo(doc_id: str, **fields: Any) -> Doc:
    return {"id": doc_id, "title": f"title of {doc_id}", "_deleted": False, **fields}


def insert(doc: Any) -> Doc:
    return {"newDocumentState": doc}


GOOD_ROW = insert(todo("good"))


# ---------------------------------------------------------------------------------------------
# Fixtures and checks shared by every case


@pytest.fixture()
async def api(syncd: SyncdProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=syncd.url, timeout=120.0) as client:
        yield client


@pytest.fixture(scope="module")
def small_syncd(database_url: str) -> Iterator[SyncdProcess]:
    """A dedicated server whose request bodies may hold at most 64 KiB."""
    server = SyncdProcess(database_url, env={"SYNCD_MAX_BODY_BYTES": str(SMALL_BODY_LIMIT)})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
async def small_api(small_syncd: SyncdProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=small_syncd.url, timeout=60.0) as client:
        yield client


def assert_error(
    response: httpx.Response, status: int, code: str, *, details: bool = False
) -> dict[str, Any]:
    """The response is ``status`` with exactly the error envelope and ``code``; return the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == ({"code", "message", "details"} if details else {"code", "message"})
    assert error["code"] == code, error
    message = error["message"]
    assert isinstance(message, str) and " " in message.strip(), "a sentence, not a bare code"
    return error


async def stored(db: asyncpg.Connection, collection: str) -> int:
    count = await db.fetchval(
        """
        SELECT count(*)
        FROM syncd_documents AS d JOIN syncd_collections AS c ON c.id = d.collection_id
        WHERE c.name = $1
        """,
        collection,
    )
    assert isinstance(count, int)
    return count


async def assert_nothing_written(db: asyncpg.Connection, collection: str) -> None:
    assert await stored(db, collection) == 0


async def assert_still_serving(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    """A valid push is stored, and pulls (first and with the returned checkpoint) still work."""
    before = await stored(db, collection)
    doc = todo(f"ok-{uuid.uuid4().hex[:8]}")
    pushed = await api.post(sync_path(collection), json=[insert(doc)])
    assert pushed.status_code == 200, pushed.text
    assert pushed.json() == []
    first = await api.get(sync_path(collection), params={"limit": PULL_MAX_LIMIT})
    assert first.status_code == 200, first.text
    page = first.json()
    assert doc in page["documents"]
    following = await api.get(
        sync_path(collection), params={"checkpoint": json.dumps(page["checkpoint"])}
    )
    assert following.status_code == 200, following.text
    assert following.json() == {"documents": [], "checkpoint": page["checkpoint"]}
    assert await stored(db, collection) == before + 1


async def push_raw(api: httpx.AsyncClient, collection: str, body: bytes) -> httpx.Response:
    return await api.post(sync_path(collection), content=body, headers=JSON_HEADERS)


# ---------------------------------------------------------------------------------------------
# Push bodies not declared as JSON (415): a foreign page can send those without a preflight


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text-plain"),
        pytest.param("text/plain;charset=UTF-8", id="text-plain-charset"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("multipart/form-data; boundary=x", id="multipart"),
        pytest.param("application/jsonp", id="json-prefix"),
        pytest.param(None, id="none"),
    ],
)
async def test_a_push_not_declared_as_json_is_415(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, content_type: str | None
) -> None:
    body = json.dumps([GOOD_ROW]).encode()  # valid JSON: only the declaration is wrong
    headers = {} if content_type is None else {"content-type": content_type}
    response = await api.post(sync_path(collection), content=body, headers=headers)
    error = assert_error(response, 415, "unsupported_media_type")
    assert "Content-Type: application/json" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


async def test_a_json_content_type_with_parameters_is_accepted(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    body = json.dumps([GOOD_ROW]).encode()
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        response = await api.post(sync_path(collection), content=body,
                                  headers={"content-type": content_type})
        assert response.status_code == 200 and response.json() == [], response.text
    assert await stored(db, collection) == 1


# ---------------------------------------------------------------------------------------------
# Push bodies that are not a JSON array of push rows (400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'[{"newDocumentState": {"id": "a", "title": "x"}', id="truncated"),
        pytest.param(b"[{'newDocumentState': {'id': 'a', 'title': 'x'}}]", id="single-quotes"),
        pytest.param(b'[{"newDocumentState": {"id": "a", "title": "x"}},]', id="trailing-comma"),
        pytest.param(b"[object Object]", id="object-object"),
        pytest.param(b'[{"newDocumentState": {"id": "a", "title": NaN}}]', id="nan"),
        pytest.param(b'[{"newDocumentState": {"id": "a", "title": "\xff"}}]', id="not-utf8"),
        pytest.param(b'[{"newDocumentState": {"id": "a", "title": "\\ud800"}}]', id="surrogate"),
        pytest.param(b"\xef\xbb\xbf[]", id="bom"),
        pytest.param(b"[" * 2000 + b"]" * 2000, id="deeper-than-the-parser-reads"),
    ],
)
async def test_malformed_json_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, body: bytes
) -> None:
    error = assert_error(await push_raw(api, collection, body), 400, "invalid_json")
    assert "not valid JSON" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


async def test_empty_body_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    error = assert_error(await push_raw(api, collection, b""), 400, "invalid_json")
    assert "empty" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(GOOD_ROW, "an object", id="object"),
        pytest.param({"rows": [GOOD_ROW]}, "an object", id="wrapped-array"),
        pytest.param("[]", "a string", id="string"),
        pytest.param(5, "a number", id="number"),
        pytest.param(True, "a boolean", id="boolean"),
        pytest.param(None, "null", id="null"),
    ],
)
async def test_push_body_that_is_not_an_array_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, body: Any, kind: str
) -> None:
    error = assert_error(
        await push_raw(api, collection, json.dumps(body).encode()), 400, "invalid_push_body"
    )
    assert "JSON array" in error["message"] and kind in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


# ---------------------------------------------------------------------------------------------
# Push rows of the wrong shape (400); the valid row in front of them is not written either


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(1, id="number"),
        pytest.param("row", id="string"),
        pytest.param(None, id="null"),
        pytest.param(True, id="boolean"),
        pytest.param([insert(todo("a"))], id="array"),
    ],
)
async def test_row_that_is_not_an_object_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, row: Any
) -> None:
    response = await api.post(sync_path(collection), json=[GOOD_ROW, row])
    error = assert_error(response, 400, "invalid_push_row")
    assert "push row 1" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({}, id="empty-row"),
        pytest.param({"assumedMasterState": None}, id="only-assumed"),
        pytest.param(todo("a"), id="bare-document"),
        pytest.param({"newDocumentState": None}, id="null"),
        pytest.param({"newDocumentState": "doc"}, id="string"),
        pytest.param({"newDocumentState": [todo("a")]}, id="array"),
        pytest.param({"newdocumentstate": todo("a")}, id="misspelt"),
    ],
)
async def test_row_without_new_document_state_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, row: Any
) -> None:
    response = await api.post(sync_path(collection), json=[GOOD_ROW, row])
    error = assert_error(response, 400, "invalid_push_row")
    assert "push row 1" in error["message"] and "newDocumentState" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    "assumed",
    [
        pytest.param("a", id="string"),
        pytest.param(5, id="number"),
        pytest.param(False, id="boolean"),
        pytest.param([todo("a")], id="array"),
    ],
)
async def test_assumed_master_state_of_the_wrong_type_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, assumed: Any
) -> None:
    row = {"assumedMasterState": assumed, "newDocumentState": todo("a")}
    response = await api.post(sync_path(collection), json=[GOOD_ROW, row])
    error = assert_error(response, 400, "invalid_push_row")
    assert "push row 1" in error["message"] and "assumedMasterState" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


async def test_duplicate_id_in_one_batch_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    rows = [insert(todo("dup")), GOOD_ROW, insert(todo("dup", title="second"))]
    error = assert_error(await api.post(sync_path(collection), json=rows), 400, "duplicate_id")
    assert "'dup'" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


# ---------------------------------------------------------------------------------------------
# Documents the collection cannot store (422); the valid documents of the batch are not written


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"title": "no id"}, id="absent"),
        pytest.param({"id": None, "title": "x"}, id="null"),
        pytest.param({"id": "", "title": "x"}, id="empty"),
        pytest.param({"id": 5, "title": "x"}, id="number"),
        pytest.param({"id": ["a"], "title": "x"}, id="array"),
        pytest.param({"_id": "a", "title": "x"}, id="other-key-name"),
    ],
)
async def test_row_without_the_primary_key_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, doc: Doc
) -> None:
    response = await api.post(sync_path(collection), json=[GOOD_ROW, insert(doc)])
    error = assert_error(response, 422, "schema_violation", details=True)
    assert "row 1" in error["message"] and "primary key" in error["message"]
    assert error["details"] == [
        {"id": "row 1", "problems": ["id: the primary key is missing or not a string"]}
    ]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


async def test_schema_violations_name_every_document_and_field(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    rows = [
        insert(todo("bad-title", title=5)),
        insert(todo("good-one")),
        insert(todo("bad-extra", colour="red")),
    ]
    response = await api.post(sync_path(collection), json=rows)
    error = assert_error(response, 422, "schema_violation", details=True)
    message = error["message"]
    assert "2 document(s)" in message
    assert "'bad-title'" in message and "title" in message
    assert "'bad-extra'" in message and "colour" in message
    assert "good-one" not in message
    details = error["details"]
    assert [entry["id"] for entry in details] == ["bad-title", "bad-extra"]
    assert details[0]["problems"] == ["title: must be string"]
    assert len(details[1]["problems"]) == 1 and "colour" in details[1]["problems"][0]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    "deleted",
    [
        pytest.param("false", id="string"),
        pytest.param(0, id="zero"),
        pytest.param(1, id="one"),
        pytest.param(None, id="null"),
        pytest.param({}, id="object"),
    ],
)
async def test_deleted_flag_that_is_not_a_boolean_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, deleted: Any
) -> None:
    rows = [GOOD_ROW, insert({**todo("flag"), "_deleted": deleted})]
    error = assert_error(
        await api.post(sync_path(collection), json=rows), 422, "schema_violation", details=True
    )
    assert "'flag'" in error["message"] and "_deleted" in error["message"]
    assert error["details"] == [{"id": "flag", "problems": ["_deleted: must be true or false"]}]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


# PostgreSQL cannot store U+0000 in text or jsonb. The body carries the JSON escape "\u0000",
# exactly as JSON.stringify writes the character.
NUL_ROWS = {
    "in-a-value": b'{"newDocumentState": {"id": "nul", "title": "a\\u0000b"}}',
    "in-a-key": b'{"newDocumentState": {"id": "nul", "title": "t", "payload": {"k\\u0000": 1}}}',
    "in-a-nested-value": (
        b'{"newDocumentState": {"id": "nul", "title": "t", "payload": [{"deep": ["\\u0000"]}]}}'
    ),
    "in-assumed-master-state": (
        b'{"assumedMasterState": {"id": "nul", "title": "\\u0000"},'
        b' "newDocumentState": {"id": "nul", "title": "t"}}'
    ),
}


@pytest.mark.parametrize("where", list(NUL_ROWS))
async def test_nul_character_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, where: str
) -> None:
    body = b'[{"newDocumentState": {"id": "good", "title": "t"}}, ' + NUL_ROWS[where] + b"]"
    assert b"\\u0000" in body and b"\x00" not in body
    error = assert_error(await push_raw(api, collection, body), 422, "schema_violation",
                         details=True)
    assert "'nul'" in error["message"] and "\\u0000" in error["message"]
    [entry] = error["details"]
    assert entry["id"] == "nul"
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


async def test_nul_character_in_the_primary_key_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    body = b'[{"newDocumentState": {"id": "a\\u0000b", "title": "t"}}]'
    error = assert_error(await push_raw(api, collection, body), 422, "schema_violation",
                         details=True)
    assert error["details"] == [
        {"id": "a\x00b", "problems": ["id: contains \\u0000, which PostgreSQL cannot store"]}
    ]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


def nested(depth: int) -> Any:
    """``depth`` arrays, one inside the other."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_document_nested_too_deeply_to_store_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    # The parser reads 1024 levels but syncd writes at most 254 (the document object included).
    deepest_allowed = todo("deep-ok", payload=nested(253))
    rows = [insert(deepest_allowed), insert(todo("too-deep", payload=nested(254)))]
    error = assert_error(
        await api.post(sync_path(collection), json=rows), 422, "document_too_deep", details=True
    )
    assert "'too-deep'" in error["message"] and "254 levels" in error["message"]
    assert [entry["id"] for entry in error["details"]] == ["too-deep"]
    await assert_nothing_written(db, collection)

    # Deeper than Python's recursion limit, still within the parser's: also a 422.
    body = (
        b'[{"newDocumentState": {"id": "deeper", "title": "t", "payload": '
        + b"[" * 1000 + b"]" * 1000 + b"}}]"
    )
    error = assert_error(await push_raw(api, collection, body), 422, "document_too_deep",
                         details=True)
    assert [entry["id"] for entry in error["details"]] == ["deeper"]
    await assert_nothing_written(db, collection)

    assert (await api.post(sync_path(collection), json=[insert(deepest_allowed)])).json() == []
    page = (await api.get(sync_path(collection))).json()
    assert page["documents"] == [deepest_allowed]
    await assert_still_serving(api, db, collection)


# ---------------------------------------------------------------------------------------------
# Unknown collections (404)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("no_such_collection", id="plain"),
        pytest.param("x" * 300, id="longer-than-any-name"),
        pytest.param("a%00b", id="nul"),
        pytest.param("%C3%A9t%C3%A9", id="non-ascii"),
    ],
)
async def test_pull_from_unknown_collection_is_404(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, name: str
) -> None:
    error = assert_error(await api.get(sync_path(name)), 404, "unknown_collection")
    assert "does not exist" in error["message"]
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("no_such_collection", id="plain"),
        pytest.param("a%00b", id="nul"),
    ],
)
async def test_push_to_unknown_collection_is_404(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, name: str
) -> None:
    totals = (
        "SELECT (SELECT count(*) FROM syncd_collections), (SELECT count(*) FROM syncd_documents)"
    )
    before = await db.fetchrow(totals)
    response = await api.post(sync_path(name), json=[insert(todo("a"))])
    error = assert_error(response, 404, "unknown_collection")
    assert "does not exist" in error["message"] and "syncd collections add" in error["message"]
    # The push made no collection exist and wrote no document anywhere.
    assert await db.fetchrow(totals) == before
    await assert_still_serving(api, db, collection)


# ---------------------------------------------------------------------------------------------
# Pull parameters (400)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("[object Object]", id="object-object"),
        pytest.param("cp-5", id="bare-word"),
        pytest.param("{id: 'a', lwt: 1}", id="javascript-literal"),
        pytest.param("%7B%22id%22%3A%22a%22%7D", id="encoded-twice"),
        pytest.param("\x00", id="nul"),
    ],
)
async def test_checkpoint_that_is_not_json_says_how_to_encode_it(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, raw: str
) -> None:
    response = await api.get(sync_path(collection), params={"checkpoint": raw})
    error = assert_error(response, 400, "invalid_checkpoint")
    assert "not JSON" in error["message"]
    assert "encodeURIComponent(JSON.stringify(" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    "checkpoint",
    [
        pytest.param("cp-5", id="string"),
        pytest.param(5, id="number"),
        pytest.param([], id="empty-array"),
        pytest.param([{"id": "a", "lwt": 1}], id="array"),
        pytest.param(True, id="boolean"),
    ],
)
async def test_checkpoint_that_is_not_an_object_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, checkpoint: Any
) -> None:
    params = {"checkpoint": json.dumps(checkpoint)}
    error = assert_error(await api.get(sync_path(collection), params=params), 400,
                         "invalid_checkpoint")
    assert "JSON object" in error["message"]
    assert "encodeURIComponent(JSON.stringify(" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    "checkpoint",
    [
        pytest.param({"id": 5, "lwt": 1}, id="numeric-id"),
        pytest.param({"id": "last-doc-id", "lwt": 1}, id="document-id"),
        pytest.param({"id": "a", "updatedAt": 1700000000}, id="other-server-shape"),
        pytest.param({"id": "0.1", "lwt": "12"}, id="string-lwt"),
        pytest.param({"id": "0.1", "lwt": -1}, id="negative-lwt"),
        pytest.param({"id": "0.1", "lwt": 1.5}, id="fractional-lwt"),
        pytest.param({"id": "0.1", "lwt": 2**53}, id="lwt-beyond-javascript"),
        pytest.param({"id": "0.1", "lwt": True}, id="boolean-lwt"),
        pytest.param({"id": "0.1"}, id="no-lwt"),
        pytest.param({"lwt": 5}, id="no-id"),
    ],
)
async def test_checkpoint_of_the_wrong_shape_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, checkpoint: Doc
) -> None:
    params = {"checkpoint": json.dumps(checkpoint)}
    error = assert_error(await api.get(sync_path(collection), params=params), 400,
                         "invalid_checkpoint")
    assert '{"id": "<epoch>.<seq>", "lwt": <integer>}' in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize(
    "limit",
    ["0", "-1", str(PULL_MAX_LIMIT + 1), "9" * 40],
)
async def test_limit_out_of_range_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, limit: str
) -> None:
    response = await api.get(sync_path(collection), params={"limit": limit})
    error = assert_error(response, 400, "invalid_limit")
    assert f"between 1 and {PULL_MAX_LIMIT}" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize("limit", ["abc", "1.5", "1e3", "0x10", "ten", "9" * 5000])
async def test_limit_that_is_not_an_integer_is_rejected(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, limit: str
) -> None:
    response = await api.get(sync_path(collection), params={"limit": limit})
    error = assert_error(response, 400, "invalid_limit")
    assert "must be an integer" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


async def test_limit_at_the_bounds_is_accepted(
    api: httpx.AsyncClient, collection: str
) -> None:
    for limit in (1, PULL_MAX_LIMIT):
        response = await api.get(sync_path(collection), params={"limit": limit})
        assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------------------
# Body size (413 on a server limited to 64 KiB; the default admits a full batch of 1 MB docs)


def sized_body(size: int, doc_id: str = "big") -> bytes:
    """A valid push body of exactly ``size`` bytes: one document padded with its title."""
    empty = json.dumps([insert(todo(doc_id, title=""))], separators=(",", ":")).encode()
    padding = size - len(empty)
    assert padding >= 0
    body = json.dumps(
        [insert(todo(doc_id, title="x" * padding))], separators=(",", ":")
    ).encode()
    assert len(body) == size
    return body


async def chunks_of(body: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    """The body as a stream of unknown length (sent with Transfer-Encoding: chunked)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_body_over_the_limit_by_content_length_is_413(
    small_api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    body = sized_body(SMALL_BODY_LIMIT + 1)
    response = await small_api.post(sync_path(collection), content=body, headers=JSON_HEADERS)
    assert response.request.headers["content-length"] == str(len(body))
    error = assert_error(response, 413, "body_too_large")
    assert str(SMALL_BODY_LIMIT) in error["message"]
    assert "SYNCD_MAX_BODY_BYTES" in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(small_api, db, collection)


async def test_body_over_the_limit_without_content_length_is_413(
    small_api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    body = sized_body(4 * SMALL_BODY_LIMIT)
    response = await small_api.post(
        sync_path(collection), content=chunks_of(body), headers=JSON_HEADERS
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    error = assert_error(response, 413, "body_too_large")
    assert str(SMALL_BODY_LIMIT) in error["message"]
    await assert_nothing_written(db, collection)
    await assert_still_serving(small_api, db, collection)


async def test_body_at_the_limit_is_accepted_either_way(
    small_api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    with_length = await small_api.post(
        sync_path(collection), content=sized_body(SMALL_BODY_LIMIT, "a"), headers=JSON_HEADERS
    )
    assert with_length.status_code == 200, with_length.text
    chunked = await small_api.post(
        sync_path(collection),
        content=chunks_of(sized_body(SMALL_BODY_LIMIT, "b")),
        headers=JSON_HEADERS,
    )
    assert chunked.status_code == 200, chunked.text
    assert await stored(db, collection) == 2


async def test_default_limit_admits_a_batch_of_100_documents_of_1_mb(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    # RxDB pushes push.batchSize (default 100) rows at once and retries a rejected batch forever,
    # so the default limit must admit a full batch of large documents.
    size = 1_000_000
    docs = [todo(f"doc-{i:03d}", payload=f"{i:03d}" + "p" * (size - 3)) for i in range(100)]
    body = json.dumps([insert(doc) for doc in docs]).encode()
    assert len(body) > 100 * size
    response = await api.post(sync_path(collection), content=body, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text[:500]
    assert response.json() == []
    rows = await db.fetch(
        """
        SELECT d.id, length(d.data->>'payload') AS payload, left(d.data->>'payload', 3) AS head
        FROM syncd_documents AS d JOIN syncd_collections AS c ON c.id = d.collection_id
        WHERE c.name = $1
        ORDER BY d.id
        """,
        collection,
    )
    assert [(r["id"], r["payload"], r["head"]) for r in rows] == [
        (f"doc-{i:03d}", size, f"{i:03d}") for i in range(100)
    ]
    await assert_still_serving(api, db, collection)


# ---------------------------------------------------------------------------------------------
# Routes and methods (404 / 405 as JSON envelopes)


@pytest.mark.parametrize(
    "path",
    ["/", "/api/v1/nope", "/api/v1/sync", "/api/v1/sync/", "/api/v2/sync/todos", "/favicon.ico"],
)
async def test_unknown_route_is_a_json_404(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, path: str
) -> None:
    assert_error(await api.get(path), 404, "not_found")
    assert_error(await api.post(path, json=[GOOD_ROW]), 404, "not_found")
    await assert_still_serving(api, db, collection)


async def test_route_below_a_collection_is_a_json_404(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str
) -> None:
    assert_error(await api.get(sync_path(collection) + "/extra"), 404, "not_found")
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_wrong_method_is_a_json_405(
    api: httpx.AsyncClient, db: asyncpg.Connection, collection: str, method: str
) -> None:
    response = await api.request(method, sync_path(collection), json=[GOOD_ROW])
    assert_error(response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    await assert_nothing_written(db, collection)
    await assert_still_serving(api, db, collection)


async def test_wrong_method_on_healthz_is_a_json_405(api: httpx.AsyncClient) -> None:
    response = await api.post("/healthz", json={})
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]

