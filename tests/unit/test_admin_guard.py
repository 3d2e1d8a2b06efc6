"""The admin guard in mode ``none``: open on a loopback address, shut on any other (a real
Starlette app in process; mode ``none`` needs no authenticator to be asked)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from syncd.admin.errors import ErrorRing
from syncd.admin.guard import admit
from syncd.config import ConfigError, Settings
from syncd.exceptions import SyncdError
from syncd.web.responses import handle_exception


async def _get(settings: Settings) -> httpx.Response:
    async def guarded(request: Request) -> PlainTextResponse:
        await admit(request)
        return PlainTextResponse("admitted")

    app = Starlette(routes=[Route("/", guarded)],
                    exception_handlers={SyncdError: handle_exception})
    app.state.settings = settings
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as client:
        return await client.get("/")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_mode_none_is_open_on_loopback(host: str) -> None:
    assert (await _get(Settings(host=host))).text == "admitted"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.11", "::"])
async def test_mode_none_is_shut_on_a_public_address_even_when_allowed_to_serve(
    host: str,
) -> None:
    answer = await _get(Settings(host=host, auth_none_allow_public=True))
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "admin_needs_authentication"


@pytest.mark.parametrize("value", ["role", "=admin", "role="])
def test_the_admin_claim_must_be_claim_equals_value(value: str) -> None:
    with pytest.raises(ConfigError, match="SYNCD_ADMIN_CLAIM"):
        Settings.from_env({"SYNCD_ADMIN_CLAIM": value})
    assert Settings.from_env({"SYNCD_ADMIN_CLAIM": "role=admin"}).admin_claim_pair == (
        "role", "admin")


def test_the_error_ring_counts_kinds_and_keeps_the_most_recent() -> None:
    ring = ErrorRing(size=2)
    ring.record(404, "unknown_collection", "/api/v1/sync/{collection}")
    ring.record(400, "invalid_limit", "/api/v1/sync/{collection}")
    ring.record(404, "unknown_collection", "/api/v1/sync/{collection}")
    ring.record(401, "missing_token", "/admin/api/overview")  # the oldest kind goes
    assert [(e["status"], e["code"], e["count"]) for e in ring.snapshot()] == [
        (401, "missing_token", 1), (404, "unknown_collection", 2)]
