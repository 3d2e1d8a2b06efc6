"""Sidecar security: every attack fails; every mode's happy path works."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from websockets.typing import Subprotocol

from syncd.auth.apikeys import key_hash
from tests.authworld import AUDIENCE, HS_SECRET, ISSUER, Issuer, LocalHttp
from tests.conftest import TODO_SCHEMA, register
from tests.support import SyncdProcess

OWNED_SCHEMA: dict[str, Any] = {
    **TODO_SCHEMA,
    "properties": {**TODO_SCHEMA["properties"], "owner": {"type": "string"}},
}
# Rows belong to the token's `sub`; writes need the `write` scope and the caller as owner.
ACCESS = {"partition_claim": "sub", "owner_field": "owner", "write": {"scope": ["write"]}}
SERVICE_KEY = "sk_test_service_key_0123456789"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    world = Issuer()
    yield world
    world.close()


@pytest.fixture(scope="module")
def jwt_server(database_url: str, issuer: Issuer) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "jwt",
        "SYNCD_JWT_ALGORITHMS": "RS256,ES256,EdDSA,HS256",
        "SYNCD_JWT_SECRET": HS_SECRET,
        "SYNCD_JWT_JWKS_URL": issuer.jwks.url + "/.well-known/jwks.json",
        "SYNCD_JWT_ISSUER": ISSUER,
        "SYNCD_JWT_AUDIENCE": AUDIENCE,
        "SYNCD_JWT_LEEWAY_SECONDS": "1",
        "SYNCD_JWT_JWKS_MIN_REFRESH_SECONDS": "1",
        "SYNCD_API_KEYS": f"billing:{key_hash(SERVICE_KEY)}",
    })
    yield server
    server.stop()


@pytest.fixture()
def owned(database_url: str) -> str:
    return register(database_url, OWNED_SCHEMA, access=ACCESS)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def doc(doc_id: str, owner: str, **fields: Any) -> dict[str, Any]:
    return {"id": doc_id, "title": "t", "owner": owner, "_deleted": False, **fields}


def push(server: SyncdProcess, collection: str, token: str, *rows: dict[str, Any],
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/sync/{collection}", json=list(rows),
                      headers={**bearer(token), **(headers or {})}, timeout=30)


def pull(server: SyncdProcess, collection: str, token: str,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/sync/{collection}",
                     headers={**bearer(token), **(headers or {})}, timeout=30)


def assert_401(response: httpx.Response, code: str | None = None) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error


# --- attacks on the token -------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "HS256"])
def test_valid_tokens_of_every_configured_algorithm_are_accepted(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str, alg: str
) -> None:
    response = pull(jwt_server, owned, issuer.token("alice", alg=alg))
    assert response.status_code == 200, response.text


def test_expired_and_not_yet_valid_tokens_are_refused(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    assert_401(pull(jwt_server, owned, issuer.token("alice", ttl=-60)), "token_expired")
    future = issuer.token("alice", nbf=int(time.time()) + 600)
    assert_401(pull(jwt_server, owned, future), "invalid_token")


def test_wrong_issuer_audience_and_missing_expiry_are_refused(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    assert_401(pull(jwt_server, owned, issuer.token("alice", iss="https://evil.test")))
    assert_401(pull(jwt_server, owned, issuer.token("alice", aud="another-service")))
    assert_401(pull(jwt_server, owned, issuer.token("alice", exp=None)))


def test_alg_none_is_refused(jwt_server: SyncdProcess, owned: str) -> None:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300,
              "scope": "read write"}
    for alg in ("none", "None", "NONE"):
        unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}."
        assert_401(pull(jwt_server, owned, unsigned), "invalid_token")


def test_hs_rs_key_confusion_is_refused(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    # The classic attack: sign with HMAC using the (public!) RSA key as the secret.
    public_pem = issuer.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}))
    payload = b64(orjson.dumps({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE,
                                "exp": int(time.time()) + 300}))
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert_401(pull(jwt_server, owned, f"{header}.{payload}.{b64(signature)}"), "invalid_token")
    # And an RS256 token whose header claims the EC key.
    assert_401(pull(jwt_server, owned, issuer.token("alice", alg="RS256", kid="ec-1")))


def test_a_tampered_signature_or_payload_is_refused(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    header, payload, signature = issuer.token("alice").split(".")
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    assert_401(pull(jwt_server, owned, f"{header}.{payload}.{flipped}"), "invalid_token")
    other = issuer.token("mallory").split(".")[1]
    assert_401(pull(jwt_server, owned, f"{header}.{other}.{signature}"), "invalid_token")


def test_unknown_kid_refreshes_the_key_set_once_then_is_refused(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    assert pull(jwt_server, owned, issuer.token("alice")).status_code == 200
    time.sleep(1.1)  # past the minimum refresh interval
    rotated = issuer.rotate_in("rsa-2")
    # A key the issuer rotated in after syncd loaded the set: one refresh finds it.
    renewed = issuer.token("alice", kid="rsa-2", key=rotated)
    assert pull(jwt_server, owned, renewed).status_code == 200
    time.sleep(1.1)
    before = issuer.jwks.requests
    stranger = issuer.token("alice", kid="nobody-knows", key=rotated)
    for _ in range(5):
        assert_401(pull(jwt_server, owned, stranger), "invalid_token")
    assert issuer.jwks.requests - before == 1  # refreshed once, not once per request


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer a b c", "Basic YWxpY2U6cGFzcw==", "bearer a.b", "Bearer " + "x" * 20_000,
     "Bearer \u00e9\u00e9", "Token abc"],
)
def test_malformed_or_oversized_authorization_headers_are_401(
    jwt_server: SyncdProcess, owned: str, authorization: str
) -> None:
    response = httpx.get(f"{jwt_server.url}/api/v1/sync/{owned}",
                         headers={b"Authorization": authorization.encode("utf-8")}, timeout=30)
    # h11 refuses a header line over its limit itself; anything syncd sees is a 401.
    assert response.status_code in (401, 431), response.text
    if response.status_code == 401:
        assert response.json()["error"]["code"] in ("missing_token", "invalid_token")


def test_no_credentials_is_401_on_every_path(jwt_server: SyncdProcess, owned: str) -> None:
    assert_401(httpx.get(f"{jwt_server.url}/api/v1/sync/{owned}"), "missing_token")
    assert_401(httpx.post(f"{jwt_server.url}/api/v1/sync/{owned}", json=[]), "missing_token")


# --- attacks across partitions --------------------------------------------------------------

def test_tenants_never_see_or_overwrite_each_others_documents(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    alice, bob = issuer.token("alice"), issuer.token("bob")
    assert push(jwt_server, owned, alice,
                {"newDocumentState": doc("shared-id", "alice", title="alice's")}).json() == []
    # Bob "inserts" the same id: it is his own row, no conflict, nothing of Alice's revealed.
    answer = push(jwt_server, owned, bob,
                  {"newDocumentState": doc("shared-id", "bob", title="bob's")})
    assert answer.json() == []
    # Bob guesses Alice's state to overwrite it: he only ever addresses his own row.
    guess = push(jwt_server, owned, bob, {
        "assumedMasterState": doc("shared-id", "alice", title="alice's"),
        "newDocumentState": doc("shared-id", "bob", title="hijack"),
    })
    assert guess.status_code == 200
    assert "alice" not in guess.text  # the conflict carries Bob's own row only
    assert guess.json() == [doc("shared-id", "bob", title="bob's")]
    assert pull(jwt_server, owned, alice).json()["documents"] == [
        doc("shared-id", "alice", title="alice's")
    ]
    assert pull(jwt_server, owned, bob).json()["documents"] == [
        doc("shared-id", "bob", title="bob's")
    ]


def test_writing_a_document_owned_by_someone_else_is_403_and_writes_nothing(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    mallory = issuer.token("mallory")
    response = push(jwt_server, owned, mallory,
                    {"newDocumentState": doc("m1", "mallory")},
                    {"newDocumentState": doc("m2", "alice")})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden_owner"
    assert pull(jwt_server, owned, mallory).json()["documents"] == []


def test_a_token_without_the_write_scope_cannot_push(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    reader = issuer.token("carol", scope="read")
    assert pull(jwt_server, owned, reader).status_code == 200
    response = push(jwt_server, owned, reader, {"newDocumentState": doc("c1", "carol")})
    assert response.status_code == 403


async def test_streams_carry_only_the_callers_partition(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    url = jwt_server.url.replace("http://", "ws://") + f"/api/v1/sync/{owned}/stream"
    offered = [Subprotocol("syncd.v1"), Subprotocol(f"bearer.{issuer.token('bob')}")]
    async with websockets.connect(url, subprotocols=offered) as bob_stream:
        assert await asyncio.wait_for(bob_stream.recv(), 10) == '"RESYNC"'
        push(jwt_server, owned, issuer.token("alice"), {"newDocumentState": doc("a1", "alice")})
        push(jwt_server, owned, issuer.token("bob"), {"newDocumentState": doc("b1", "bob")})
        frame = orjson.loads(await asyncio.wait_for(bob_stream.recv(), 10))
        assert [d["id"] for d in frame["documents"]] == ["b1"]


async def test_a_stream_without_a_valid_token_is_closed_4401(
    jwt_server: SyncdProcess, owned: str
) -> None:
    url = jwt_server.url.replace("http://", "ws://") + f"/api/v1/sync/{owned}/stream"
    async with websockets.connect(url + "?access_token=not-a-jwt") as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401


async def test_a_stream_that_outlives_its_token_is_closed_with_4401(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    token = issuer.token("alice", ttl=2)  # + 1 s leeway
    url = jwt_server.url.replace("http://", "ws://") + f"/api/v1/sync/{owned}/stream"
    started = time.monotonic()
    async with websockets.connect(url + f"?access_token={token}") as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
    assert ws.close_code == 4401
    assert time.monotonic() - started < 10


async def test_a_stream_whose_token_has_a_numeric_string_exp_is_closed_with_4401(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    # PyJWT reads `exp` with int(), so a numeric string is a valid expiry for HTTP; the stream
    # must end at that same moment, not never.
    token = issuer.token("alice", exp=str(int(time.time()) + 3))  # + 1 s leeway
    assert pull(jwt_server, owned, token).status_code == 200
    url = jwt_server.url.replace("http://", "ws://") + f"/api/v1/sync/{owned}/stream"
    started = time.monotonic()
    async with websockets.connect(url + f"?access_token={token}") as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
    assert ws.close_code == 4401
    assert time.monotonic() - started < 10
    assert_401(pull(jwt_server, owned, token), "token_expired")


# --- service keys -----------------------------------------------------------------------------

def test_a_service_key_writes_into_a_named_partition(
    jwt_server: SyncdProcess, issuer: Issuer, owned: str
) -> None:
    as_alice = {"X-Syncd-Partition": "alice"}
    response = push(jwt_server, owned, SERVICE_KEY,
                    {"newDocumentState": doc("from-api", "alice")}, headers=as_alice)
    assert response.json() == []
    assert pull(jwt_server, owned, issuer.token("alice")).json()["documents"] == [
        doc("from-api", "alice")
    ]
    assert pull(jwt_server, owned, issuer.token("bob")).json()["documents"] == []
    # Without naming the partition, a service key gets a precise 400, not someone's data.
    response = pull(jwt_server, owned, SERVICE_KEY)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "partition_required"
    # A user cannot use the header to reach another partition.
    sneaky = pull(jwt_server, owned, issuer.token("bob"), headers=as_alice)
    assert sneaky.json()["documents"] == []


def test_a_wrong_service_key_is_401(jwt_server: SyncdProcess, owned: str) -> None:
    assert_401(pull(jwt_server, owned, SERVICE_KEY + "x", headers={"X-Syncd-Partition": "a"}))


# --- forward authentication -----------------------------------------------------------------

@pytest.fixture(scope="module")
def api() -> Iterator[LocalHttp]:
    """The existing API: knows two sessions, answers who they are."""
    sessions = {"Bearer session-alice": {"sub": "alice", "scope": "read write"},
                "Bearer session-bob": {"sub": "bob", "scope": "read"}}

    def answer(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        claims = sessions.get(headers.get("authorization", ""))
        if claims is None and headers.get("cookie") == "session=alice-cookie":
            claims = sessions["Bearer session-alice"]
        if claims is None:
            return 401, {"Content-Type": "application/json"}, b'{"error": "no"}'
        return 200, {"Content-Type": "application/json", "X-Tenant": "t1"}, orjson.dumps(claims)

    server = LocalHttp(answer)
    yield server
    server.close()


@pytest.fixture(scope="module")
def forward_server(database_url: str, api: LocalHttp) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "forward",
        "SYNCD_FORWARD_URL": api.url + "/auth/check",
        "SYNCD_FORWARD_CLAIM_HEADERS": "tenant=X-Tenant",
        "SYNCD_FORWARD_CACHE_SECONDS": "30",
    })
    yield server
    server.stop()


def test_forward_auth_happy_path_caches_positive_answers(
    forward_server: SyncdProcess, api: LocalHttp, owned: str
) -> None:
    assert push(forward_server, owned, "session-alice",
                {"newDocumentState": doc("f1", "alice")}).json() == []
    before = api.requests
    for _ in range(3):
        body = pull(forward_server, owned, "session-alice").json()
        assert body["documents"] == [doc("f1", "alice")]
    assert api.requests == before  # answered from the cache
    cookie = httpx.get(f"{forward_server.url}/api/v1/sync/{owned}",
                       headers={"Cookie": "session=alice-cookie"}, timeout=30)
    assert cookie.json()["documents"] == [doc("f1", "alice")]
    # Bob's session has no write scope: 403, and his partition stays his own.
    assert push(forward_server, owned, "session-bob",
                {"newDocumentState": doc("f2", "bob")}).status_code == 403
    assert pull(forward_server, owned, "session-bob").json()["documents"] == []


def test_forward_auth_refusal_is_401(forward_server: SyncdProcess, owned: str) -> None:
    assert_401(pull(forward_server, owned, "session-mallory"))
    assert_401(httpx.get(f"{forward_server.url}/api/v1/sync/{owned}"), "missing_token")


def test_forward_auth_endpoint_down_is_503_not_open_access(
    database_url: str, owned: str
) -> None:
    dead = LocalHttp(lambda _h: (200, {}, b"{}"))
    url = dead.url
    dead.close()  # nothing listens there any more
    server = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "forward", "SYNCD_FORWARD_URL": url + "/auth",
        "SYNCD_FORWARD_TIMEOUT_MS": "500",
    })
    try:
        response = pull(server, owned, "session-alice")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "auth_unavailable"
    finally:
        server.stop()


# --- mode none --------------------------------------------------------------------------------

def test_mode_none_refuses_a_public_address_unless_forced(database_url: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SYNCD_DATABASE_URL": database_url, "SYNCD_AUTH_MODE": "none"}
    result = subprocess.run([sys.executable, "-m", "syncd", "serve", "--host", "0.0.0.0"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SYNCD_AUTH_NONE_ALLOW_PUBLIC" in result.stderr


def test_jwt_settings_are_checked_at_start(database_url: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SYNCD_DATABASE_URL": database_url, "SYNCD_AUTH_MODE": "jwt",
           "SYNCD_JWT_ALGORITHMS": "none"}
    result = subprocess.run([sys.executable, "-m", "syncd", "serve"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unsupported none" in result.stderr

