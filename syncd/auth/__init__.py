"""Authentication (who is asking) and authorization (what they may read and write, where)."""

from __future__ import annotations

from typing import Protocol

import httpx

from syncd.auth.apikeys import ApiKeys
from syncd.auth.identity import ANONYMOUS, Credentials, Identity
from syncd.config import Settings
from syncd.exceptions import Unauthorized


class Authenticator(Protocol):
    """Turns credentials into an identity, or raises Unauthorized (401) / Unavailable (503)."""

    async def authenticate(self, credentials: Credentials) -> Identity: ...

    async def close(self) -> None: ...


class NoAuthentication:
    """Mode ``none``: every request is the anonymous identity. Local development only."""

    async def authenticate(self, credentials: Credentials) -> Identity:
        return ANONYMOUS

    async def close(self) -> None:
        return None


class Authentication:
    """Service keys first (a hash lookup), then the configured user authentication."""

    # No genuine token is this long; refusing early bounds the work an attacker can cause.
    MAX_TOKEN_LENGTH = 16 * 1024

    def __init__(
        self, keys: ApiKeys, users: Authenticator | None, http: httpx.AsyncClient | None
    ) -> None:
        self._keys = keys
        self._users = users
        self._http = http

    async def authenticate(self, credentials: Credentials) -> Identity:
        if credentials.token is not None and len(credentials.token) > self.MAX_TOKEN_LENGTH:
            raise Unauthorized("the token is too long", code="invalid_token")
        service = self._keys.identify(credentials)
        if service is not None:
            return service
        if self._users is None:
            raise Unauthorized("send a service key: Authorization: Bearer <key>",
                               code="missing_token" if not credentials.token else "invalid_token")
        return await self._users.authenticate(credentials)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator of the configured mode (SYNCD_AUTH_MODE)."""
    if settings.auth_mode == "none":
        return NoAuthentication()
    keys = ApiKeys(settings.api_keys)
    if settings.auth_mode == "api-key":
        return Authentication(keys, None, None)
    http = httpx.AsyncClient(follow_redirects=False)
    users: Authenticator
    if settings.auth_mode == "jwt":
        from syncd.auth.tokens import JwtAuthenticator

        users = JwtAuthenticator(settings, http)
    else:
        from syncd.auth.forward import ForwardAuthenticator

        users = ForwardAuthenticator(settings, http)
    return Authentication(keys, users, http)


__all__ = [
    "ANONYMOUS", "Authentication", "Authenticator", "Credentials", "Identity",
    "NoAuthentication", "build_authenticator",
]
