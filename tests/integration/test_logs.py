"""``SYNCD_LOG_FORMAT=json`` on a real syncd: every line of its log is one JSON object, refused
requests are there at info with their error code, and no token or cookie ever is."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.authworld import AUDIENCE, HS_SECRET, ISSUER
from tests.conftest import TODO_SCHEMA, register
from tests.support import SyncdProcess

ACCESS = {"read": {"scope": ["todos:read"]}, "write": {"scope": ["todos:write"]}}
COOKIE = "session=cookie-value-that-must-not-be-logged"


def token(subject: str, scope: str) -> str:
    now = time.time()
    return jwt.encode({"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": int(now),
                       "exp": int(now + 300), "scope": scope}, HS_SECRET, algorithm="HS256")


@pytest.fixture()
def json_syncd(database_url: str) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env={
        "SYNCD_LOG_FORMAT": "json",
        # debug: also uvicorn's access log, whose lines carry the raw path and query.
        "SYNCD_LOG_LEVEL": "debug",
        "SYNCD_AUTH_MODE": "jwt",
        "SYNCD_JWT_ALGORITHMS": "HS256",
        "SYNCD_JWT_SECRET": HS_SECRET,
        "SYNCD_JWT_ISSUER": ISSUER,
        "SYNCD_JWT_AUDIENCE": AUDIENCE,
        "SYNCD_MAX_BODY_BYTES": "2048",
    })
    yield server
    server.stop()


def lines(server: SyncdProcess) -> list[dict[str, Any]]:
    text = server.log()
    parsed = []
    for line in text.splitlines():
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n--- log ---\n{text}")
        assert isinstance(parsed[-1], dict), line
    return parsed


def test_json_lines_with_refused_requests_at_info_and_no_credentials(
    json_syncd: SyncdProcess, database_url: str
) -> None:
    collection = register(database_url, TODO_SCHEMA, access=ACCESS)
    url = f"{json_syncd.url}/api/v1/sync/{collection}"
    forged = token("mallory", "todos:read todos:write")[:-4] + "AAAA"
    reader = token("alice", "todos:read")
    writer = token("alice", "todos:read todos:write")
    with httpx.Client(timeout=30, headers={"Cookie": COOKIE}) as http:
        assert http.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        assert http.get(url, params={"access_token": forged}).status_code == 401
        assert http.post(url, headers={"Authorization": f"Bearer {reader}"},
                         json=[{"newDocumentState": {"id": "a", "title": "t"}}]).status_code == 403
        assert http.post(url, headers={"Authorization": f"Bearer {writer}"},
                         json=[{"newDocumentState": {"id": "a"}}]).status_code == 422
        assert http.post(url, headers={"Authorization": f"Bearer {writer}"},
                         json=[{"newDocumentState": {"id": "a", "title": "x" * 4096}}]
                         ).status_code == 413
        assert http.get(url, headers={"Authorization": f"Bearer {writer}"}).status_code == 200
    # uvicorn logs a websocket's path with its query at info: the token must not be in it.
    stream = url.replace("http://", "ws://") + f"/stream?access_token={forged}"
    with connect(stream) as ws, pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    # Clients that leave mid-request: before a pull's answer, and during a Server-Sent Events
    # stream. Nothing went wrong on the server's side: no warning, no error.
    auth = f"Authorization: Bearer {writer}\r\n"
    for request, linger in ((f"GET /api/v1/sync/{collection} HTTP/1.1\r\n", 0.0),
                            (f"GET /rxdb/{collection}/0/pullStream HTTP/1.1\r\n", 0.5)):
        with socket.create_connection(("127.0.0.1", json_syncd.port)) as client:
            client.sendall(f"{request}Host: x\r\n{auth}\r\n".encode())
            time.sleep(linger)
    # The stream's line is written once the server noticed its client left.
    deadline = time.monotonic() + 10
    while ('"route":"/rxdb/{collection}/{version}/pullStream"' not in json_syncd.log()
           and time.monotonic() < deadline):
        time.sleep(0.05)
    time.sleep(0.2)

    logged = lines(json_syncd)
    text = json_syncd.log()
    for secret in (forged, reader, writer, "cookie-value-that-must-not-be-logged"):
        assert secret not in text
    for line in logged:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["level"] in ("debug", "info"), line
    refused = [line for line in logged if line.get("event") == "request refused"]
    by_status = {line["status"]: line for line in refused}
    assert set(by_status) == {401, 403, 413, 422}, refused
    assert sum(1 for line in refused if line["status"] == 401) == 2
    for status, code in ((401, "invalid_token"), (403, "forbidden"), (413, "body_too_large"),
                         (422, "schema_violation")):
        line = by_status[status]
        assert line["level"] == "info", line
        assert line["code"] == code, line
        assert line["way"] == "native" and line["route"] == "/api/v1/sync/{collection}", line
        assert line["collection"] == collection and line["duration_ms"] >= 0, line
    assert by_status[403]["subject"] == "alice"
    assert "subject" not in by_status[401]  # nobody was identified
    served = [line for line in logged if line.get("event") == "request"]
    # The authorized pull, and the one whose client left; the stream the other client left.
    assert [line["level"] for line in served if line.get("way") == "native"] == ["debug"] * 2
    assert [(line["level"], line["route"]) for line in served
            if line.get("way") == "rxdb-server"] == [
        ("debug", "/rxdb/{collection}/{version}/pullStream")]
    # uvicorn's own lines are JSON too (its startup line, and the access log at debug).
    assert any(line["logger"].startswith("uvicorn") for line in logged)
    access = [line for line in logged if line["logger"] == "uvicorn.access"]
    assert any("access_token=***" in line["message"] for line in access), access
    assert any("/stream?access_token=***" in line["message"] for line in logged
               if line["logger"] == "uvicorn.error")
