"""The admin page's test world: a database of its own (so only these tests' nodes show up),
nodes with a service key and an admin claim, and quick heartbeats."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import jwt

from syncd.auth.apikeys import key_hash
from tests.authworld import HS_SECRET

SERVICE_KEY = "sk_admin-page-tests-0123456789abcdefghij"
HEARTBEAT_SECONDS = 0.5

ENV = {
    "SYNCD_AUTH_MODE": "jwt",
    "SYNCD_JWT_ALGORITHMS": "HS256",
    "SYNCD_JWT_SECRET": HS_SECRET,
    "SYNCD_API_KEYS": f"ops:{key_hash(SERVICE_KEY)}",
    "SYNCD_ADMIN_CLAIM": "role=admin",
    "SYNCD_ADMIN_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    # Pulls are answered at once in these tests; no need to wait for the echo of a push.
    "SYNCD_PUSH_ECHO_WAIT_MS": "0",
}

T = TypeVar("T")


def token(sub: str, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600, **claims}, HS_SECRET,
                      algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def overview(url: str, credential: str = SERVICE_KEY) -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/api/overview", headers=bearer(credential), timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(0.1)
