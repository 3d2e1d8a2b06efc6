"""Test support for partial replication (docs/partial-sync.md): a collection with declared filter
fields, tokens with claims, the filter as a client sends it, and an oracle that says which
documents a filter selects and what a move-out placeholder may carry."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import asyncpg
import httpx
import jwt
import orjson

from syncd.auth.apikeys import key_hash
from syncd.db.registry import CollectionRegistry
from tests.authworld import AUDIENCE, HS_JWT_ENV, HS_SECRET, ISSUER
from tests.conftest import collection_id, register
from tests.support import SyncdProcess

Doc = dict[str, Any]
Filter = dict[str, Any]

SERVICE_KEY = "sk_partial_service_key_0123456789"

# Every required property has a type whose neutral value is unambiguous, so a placeholder can be
# told from a real version: writers always give `title` a non-empty, unique text.
ITEM_SCHEMA: Doc = {
    "title": "item",
    "version": 0,
    "primaryKey": "id",
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 100},
        "listId": {"type": "string", "maxLength": 40},
        "region": {"type": "string", "maxLength": 40},
        "title": {"type": "string"},
        "n": {"type": "integer", "minimum": 0},
        "done": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "secret": {"type": "string"},  # optional: a placeholder must never carry it
    },
    "required": ["id", "listId", "region", "title", "n", "done", "tags", "kind"],
    "additionalProperties": False,
}
# What a placeholder holds in each required property the filter does not constrain.
NEUTRAL: Doc = {"listId": "", "region": "", "title": "", "n": 0, "done": False, "tags": [],
                "kind": "a"}
FILTER_FIELDS = ("listId", "region")

# listId and region may be filtered on; a caller sees only the regions of its `regions` claim.
CLAIM_RULE: Doc = {"partition_claim": "sub",
                   "filters": {"listId": {}, "region": {"claim": "regions"}}}
# The same fields, neither one an access boundary.
PLAIN_RULE: Doc = {"partition_claim": "sub", "filters": {"listId": {}, "region": {}}}


def server_env() -> dict[str, str]:
    return {**HS_JWT_ENV, "SYNCD_API_KEYS": f"partial:{key_hash(SERVICE_KEY)}"}


def serve(database_url: str, **env: str) -> Iterator[SyncdProcess]:
    """A syncd accepting HS256 tokens of tests/authworld.py and the service key above."""
    server = SyncdProcess(database_url, env={**server_env(), **env})
    try:
        yield server
    finally:
        server.stop()


def token(sub: str, regions: list[str] | str | None = None, ttl: float = 600) -> str:
    now = time.time()
    claims: Doc = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": int(now),
                   "exp": int(now + ttl), "scope": "read write"}
    if regions is not None:
        claims["regions"] = regions
    return jwt.encode(claims, HS_SECRET, algorithm="HS256")


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def service(partition: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SERVICE_KEY}", "X-Syncd-Partition": partition}


def register_filtered(database_url: str, access: Doc, schema: Doc | None = None,
                      name: str | None = None) -> str:
    """Register a collection with declared filter fields: the registry creates their indexes and
    the move-out trigger before it stores the rule (as ``syncd collections add`` does)."""
    return register(database_url, schema or ITEM_SCHEMA, name or f"p_{uuid.uuid4().hex[:10]}",
                    access)


async def add_collection(database_url: str, access: Doc, schema: Doc | None = None) -> str:
    """``register_filtered`` for a test already inside the event loop."""
    name = f"p_{uuid.uuid4().hex[:10]}"
    registry = CollectionRegistry.connect(database_url, pool_size=1)
    try:
        await registry.put(name, schema or ITEM_SCHEMA, access)
    finally:
        await registry.close()
    return name


def item(doc_id: str, list_id: str, region: str, title: str, n: int = 1, **more: Any) -> Doc:
    return {"id": doc_id, "listId": list_id, "region": region, "title": title, "n": n,
            "done": True, "tags": ["t"], "kind": "b", "_deleted": False, **more}


def filter_param(selector: Filter | None) -> dict[str, str]:
    return {} if selector is None else {"filter": orjson.dumps(selector).decode()}


# --- the oracle ---------------------------------------------------------------------------------

def _same(a: Any, b: Any) -> bool:
    """JSON equality (True is not 1)."""
    return type(a) is type(b) and a == b


def allowed_values(condition: Any) -> list[Any]:
    if isinstance(condition, dict):
        if "$eq" in condition:
            return [condition["$eq"]]
        return list(condition["$in"])
    return [condition]


def constraints(selector: Filter | None, claim_regions: list[str] | None) -> dict[str, list[Any]]:
    """The effective filter as field -> allowed values (AND across fields): the client's
    selector and, when the region field is claim-bound, the caller's regions."""
    result = {name: allowed_values(cond) for name, cond in (selector or {}).items()}
    if claim_regions is not None:
        mine = result.get("region")
        result["region"] = [r for r in claim_regions
                            if mine is None or any(_same(r, v) for v in mine)]
    return result


def matches(doc: Mapping[str, Any], effective: Mapping[str, list[Any]]) -> bool:
    return all(any(_same(doc.get(name), v) for v in values) for name, values in effective.items())


def placeholder_problem(doc: Mapping[str, Any], effective: Mapping[str, list[Any]],
                        pk: str = "id", *, pushed: Mapping[str, Any] | None = None) -> str | None:
    """What is wrong with a move-out deletion, or None: only the primary key, the constrained
    fields with values the filter selects, neutral values for the other required properties,
    and ``_deleted: true``. ``pushed``: the new state a push sent, for the placeholder answering
    its conflict, which may show a constrained field's neutral value or the device's own value
    (nothing of the stored version either way)."""
    if doc.get("_deleted") is not True:
        return "not deleted"
    required = set(ITEM_SCHEMA["required"])
    for name, value in doc.items():
        if name in (pk, "_deleted"):
            continue
        if name in effective:
            if pushed is not None and (
                _same(value, NEUTRAL.get(name)) or _same(value, pushed.get(name))
            ):
                continue
            if not any(_same(value, v) for v in effective[name]):
                return f"{name}={value!r} is not a value the filter selects"
        elif name in required:
            if not _same(value, NEUTRAL[name]):
                return f"{name}={value!r} is not the neutral value {NEUTRAL[name]!r}"
        else:
            return f"carries {name}={value!r}"
    missing = required - set(doc) - {pk}
    if missing:
        return f"misses required {sorted(missing)}"
    return None


def is_placeholder(doc: Mapping[str, Any]) -> bool:
    """Writers never write an empty title: a document with one is a placeholder."""
    return doc.get("title") == ""


async def rows(db: asyncpg.Connection, collection: str, partition: str) -> dict[str, Doc]:
    """What the partition holds now: id -> stored document."""
    cid = await collection_id(db, collection)
    found = await db.fetch(
        "SELECT id, data FROM syncd_documents WHERE collection_id = $1 AND partition = $2",
        cid, partition,
    )
    return {r["id"]: orjson.loads(r["data"]) for r in found}


# --- the native API, as a client calls it -------------------------------------------------------

async def pull(http: httpx.AsyncClient, collection: str, tok: str | dict[str, str],
               selector: Filter | None = None, checkpoint: Doc | None = None,
               limit: int = 100) -> httpx.Response:
    params = {"limit": str(limit), **filter_param(selector)}
    if checkpoint is not None:
        params["checkpoint"] = orjson.dumps(checkpoint).decode()
    headers = bearer(tok) if isinstance(tok, str) else tok
    return await http.get(f"/api/v1/sync/{collection}", params=params, headers=headers)


async def push(http: httpx.AsyncClient, collection: str, tok: str | dict[str, str],
               rows_: list[Doc], selector: Filter | None = None) -> httpx.Response:
    headers = bearer(tok) if isinstance(tok, str) else tok
    return await http.post(f"/api/v1/sync/{collection}", json=rows_,
                           params=filter_param(selector), headers=headers)


class Puller:
    """A replication that only pulls, as RxDB's downstream does without a stream: from its
    checkpoint until a short page; an empty page leaves the checkpoint as it was."""

    def __init__(self, collection: str, tok: str, selector: Filter | None = None,
                 page: int = 50) -> None:
        self.collection, self.token, self.filter, self.page = collection, tok, selector, page
        self.checkpoint: Doc | None = None
        self.docs: dict[str, Doc] = {}
        self.received: list[Doc] = []
        self.log: list[tuple[Filter | None, Doc]] = []  # each document with the filter it had
        self.pages = 0

    async def pull_all(self, http: httpx.AsyncClient) -> list[Doc]:
        """Pull until a short page; return what arrived."""
        got: list[Doc] = []
        while True:
            response = await pull(http, self.collection, self.token, self.filter,
                                  self.checkpoint, self.page)
            assert response.status_code == 200, response.text
            body = response.json()
            self.pages += 1
            docs: list[Doc] = body["documents"]
            got.extend(docs)
            self.received.extend(docs)
            self.log.extend((self.filter, doc) for doc in docs)
            for doc in docs:
                self.docs[doc["id"]] = doc
            if docs:
                self.checkpoint = body["checkpoint"]
            if len(docs) < self.page:
                return got

    def live(self) -> dict[str, Doc]:
        return {k: v for k, v in self.docs.items() if not v.get("_deleted")}
