"""The CORS middleware, called as plain ASGI: which headers go out for which Origin."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from syncd.web.cors import AllowedOrigins, CORSMiddleware

SHARED_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    # Sends the same header list every time, as a response object reused by a handler might.
    await send({"type": "http.response.start", "status": 200, "headers": SHARED_HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


async def call(origins: list[str], method: str = "GET", **headers: str) -> list[Message]:
    scope: dict[str, Any] = {
        "type": "http", "method": method, "path": "/rxdb/c/0/pull",
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await CORSMiddleware(app, origins)(scope, receive, send)
    return sent


def headers_of(messages: list[Message]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in messages[0]["headers"]}


async def test_an_allowed_origin_is_echoed_with_credentials() -> None:
    sent = await call(["https://app.example"], origin="https://app.example")
    headers = headers_of(sent)
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["vary"] == "Origin"
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"{}"
    assert SHARED_HEADERS == [(b"content-type", b"application/json")]  # not mutated


@pytest.mark.parametrize("origins", [["*"], ["https://other.example", "*"]])
async def test_any_origin_reflects_the_origin_and_never_sends_a_star(origins: list[str]) -> None:
    for method, extra in [("GET", {}), ("OPTIONS", {"access_control_request_method": "POST"})]:
        headers = headers_of(await call(origins, method, origin="http://x.example:8080", **extra))
        assert headers["access-control-allow-origin"] == "http://x.example:8080"
        assert headers["access-control-allow-credentials"] == "true"
        assert "*" not in headers.values()


async def test_a_preflight_allows_get_post_and_the_requested_headers() -> None:
    sent = await call(["https://app.example"], "OPTIONS", origin="https://app.example",
                      access_control_request_method="GET",
                      access_control_request_headers="authorization, x-tenant")
    assert sent[0]["status"] == 204
    headers = headers_of(sent)
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == "authorization, x-tenant"
    assert headers["access-control-allow-credentials"] == "true"
    assert "content-length" not in headers


@pytest.mark.parametrize(
    "request_headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "https://evil.example", "access_control_request_method": "GET"},
        {},
    ],
)
async def test_other_origins_and_requests_without_origin_pass_untouched(
    request_headers: dict[str, str],
) -> None:
    method = "OPTIONS" if "access_control_request_method" in request_headers else "GET"
    sent = await call(["https://app.example"], method, **request_headers)
    assert sent[0]["headers"] == SHARED_HEADERS  # the app answered, without CORS headers


async def test_an_options_request_that_is_not_a_preflight_reaches_the_app() -> None:
    sent = await call(["https://app.example"], "OPTIONS", origin="https://app.example")
    assert sent[1]["body"] == b"{}"
    assert headers_of(sent)["access-control-allow-origin"] == "https://app.example"


def test_allowed_origins_are_the_listed_ones_or_any_with_a_star() -> None:
    listed = AllowedOrigins(["https://app.example", "http://localhost:3000"])
    assert listed.allows("https://app.example") and listed.allows("http://localhost:3000")
    assert not listed.allows("https://evil.example") and not listed.allows("null")
    assert AllowedOrigins(["*"]).allows("https://evil.example")
    assert not AllowedOrigins([]).allows("https://app.example")
