"""Mode ``jwt``: tokens signed by the API beside syncd, checked with PyJWT.

The accepted algorithms come from configuration, never from the token: a token's ``alg`` only
selects among them, and each algorithm family has its own key source (HS* the shared secret;
RS/PS/ES/EdDSA the JWKS), so an HMAC token can never be checked against a public key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from syncd.auth.identity import Credentials, Identity, expiry_of
from syncd.config import Settings
from syncd.exceptions import Unauthorized, Unavailable

log = logging.getLogger("syncd.auth")


class KeySet:
    """A JWKS from a URL or a file: cached, refreshed when it is old or a `kid` is unknown,
    and never refreshed more often than ``min_refresh`` seconds."""

    def __init__(
        self, *, url: str, file: str, http: httpx.AsyncClient, max_age: float, min_refresh: float
    ) -> None:
        self._url = url
        self._file = Path(file) if file else None
        self._http = http
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        now = time.monotonic()
        if now - self._loaded_at > self._max_age:
            await self._refresh()
        found = self._find(kid)
        if found is None and time.monotonic() - self._loaded_at >= self._min_refresh:
            await self._refresh()  # the issuer may have rotated its keys
            found = self._find(kid)
        if found is None:
            raise Unauthorized(f"no signing key with kid {kid!r}", code="invalid_token")
        if found.algorithm_name != algorithm and found.algorithm_name is not None:
            raise Unauthorized("the token's algorithm does not match its key", code="invalid_token")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded_at < self._min_refresh and self._keys:
                return  # refreshed by a concurrent request
            try:
                document = await self._fetch()
                keys = jwt.PyJWKSet.from_dict(document).keys
            except (httpx.HTTPError, OSError, ValueError, jwt.PyJWKSetError) as exc:
                self._loaded_at = time.monotonic()  # keep the old keys; retry after min_refresh
                if not self._keys:
                    raise Unavailable(
                        f"cannot load the JWKS ({type(exc).__name__}); retry shortly",
                        code="auth_unavailable",
                    ) from exc
                log.warning("JWKS refresh failed, keeping the previous keys: %s", exc)
                return
            self._keys = {key.key_id: key for key in keys}
            self._loaded_at = time.monotonic()

    async def _fetch(self) -> dict[str, Any]:
        if self._file is not None:
            raw = await asyncio.to_thread(self._file.read_bytes)
        else:
            response = await self._http.get(self._url)
            response.raise_for_status()
            raw = response.content
        document = orjson.loads(raw)
        if not isinstance(document, dict):
            raise ValueError("a JWKS is a JSON object with a 'keys' array")
        return document


class JwtAuthenticator:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._algorithms = settings.jwt_algorithm_list
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer or None
        self._audience = settings.jwt_audience or None
        self._leeway = settings.jwt_leeway_seconds
        self._subject_claim = settings.subject_claim
        self._keys = (
            KeySet(
                url=settings.jwt_jwks_url,
                file=settings.jwt_jwks_file,
                http=http,
                max_age=settings.jwt_jwks_cache_seconds,
                min_refresh=settings.jwt_jwks_min_refresh_seconds,
            )
            if settings.jwt_jwks_url or settings.jwt_jwks_file
            else None
        )

    async def authenticate(self, credentials: Credentials) -> Identity:
        token = credentials.token
        if not token:
            raise Unauthorized(
                "send a token: Authorization: Bearer <token> (websockets: subprotocol "
                "bearer.<token> or ?access_token=)",
                code="missing_token",
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the token is not a JWT", code="invalid_token") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise Unauthorized(
                f"tokens signed with {algorithm!r} are not accepted", code="invalid_token"
            )
        key: Any
        if algorithm.startswith("HS"):
            key = self._secret
        else:
            assert self._keys is not None  # Settings guarantees a key source
            kid = header.get("kid")
            key = await self._keys.key(kid if isinstance(kid, str) else None, algorithm)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet", code="invalid_token") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}", code="invalid_token") from None
        subject = claims.get(self._subject_claim)
        return Identity(
            subject=str(subject) if subject is not None else None,
            claims=claims,
            # PyJWT verified `exp` (required) with int(exp): the same value, never a type check
            # that would let a numeric string `exp` keep a stream open for ever.
            expires_at=expiry_of(claims["exp"]) + self._leeway,
        )

    async def close(self) -> None:
        return None
