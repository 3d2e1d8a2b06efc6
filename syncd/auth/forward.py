"""Mode ``forward``: the existing API decides. syncd sends it a GET with the request's
``Authorization`` and ``Cookie`` headers, and what the request was (``Origin``, ``Referer``,
``User-Agent``, ``X-Forwarded-For``/``-Host``/``-Proto``/``-Method``/``-Uri``), and trusts the
answer: 2xx with the caller's claims (a JSON object body and/or configured response headers),
401/403 for no.

Cookies from an origin that may not use them never get here (``syncd/web/credentials.py``):
such a request with nothing else is a 403. Only positive answers are cached, briefly, keyed by a
hash of the credentials and the Origin. An unreachable or failing API is a 503, never open
access. Identities made here carry a ``recheck`` that asks the API again, bypassing the cache,
which open streams run every SYNCD_FORWARD_RECHECK_SECONDS (``syncd/auth/recheck.py``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import httpx
import orjson

from syncd.auth.identity import Credentials, Identity, expiry_of
from syncd.config import Settings
from syncd.exceptions import Forbidden, Unauthorized, Unavailable

log = logging.getLogger("syncd.auth")
CACHE_ENTRIES = 10_000


class ForwardAuthenticator:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._url = settings.forward_url
        self._timeout = settings.forward_timeout_ms / 1000
        self._ttl = settings.forward_cache_seconds
        self._recheck_seconds = settings.forward_recheck_seconds
        self._subject_claim = settings.subject_claim
        self._claim_headers = _claim_headers(settings.forward_claim_headers)
        self._http = http
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    async def authenticate(self, credentials: Credentials) -> Identity:
        forwarded = dict(credentials.headers)
        if credentials.token and "authorization" not in forwarded:
            # Websockets carry the token in a subprotocol or query: forward it as a header.
            forwarded["authorization"] = f"Bearer {credentials.token}"
        if not forwarded:
            if credentials.withheld_for is not None:
                raise Forbidden(
                    f"this request from the origin {credentials.withheld_for[:100]!r} carries "
                    "only credentials its browser attaches by itself (cookies), which syncd "
                    "accepts from its own origin and those in SYNCD_CORS_ORIGINS only; add the "
                    "origin there if it is your app's, or send a token (Authorization: Bearer)",
                    code="cross_origin_credentials",
                )
            raise Unauthorized("send the credentials your API accepts (Authorization or "
                               "a session cookie)", code="missing_token")
        # The answer may depend on the Origin (the API is told it), so it is part of the key.
        origin = credentials.context.get("origin")
        key = hashlib.sha256(
            orjson.dumps([forwarded, origin], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._cache.move_to_end(key)
            return cached[1]
        return await self._ask_and_remember(key, {**credentials.context, **forwarded})

    async def _ask_and_remember(self, key: str, headers: dict[str, str]) -> Identity:
        now = time.monotonic()
        identity = await self._ask(headers)
        if self._recheck_seconds > 0:

            async def recheck() -> Identity:
                return await self._recheck(key, headers)

            identity = replace(identity, recheck=recheck, recheck_seconds=self._recheck_seconds)
        self._cache[key] = (now + self._ttl, identity)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return identity

    async def _recheck(self, key: str, headers: dict[str, str]) -> Identity:
        """An open stream asks again: always the API, since a cached yes is what is doubted.
        A no also evicts the cached yes, so HTTP requests are refused from then on too."""
        try:
            return await self._ask_and_remember(key, headers)
        except (Unauthorized, Forbidden):
            self._cache.pop(key, None)
            raise

    async def _ask(self, headers: dict[str, str]) -> Identity:
        try:
            response = await self._http.get(
                self._url,
                # As received (Starlette decodes headers as latin-1): httpx would refuse a
                # non-ASCII str, and the API should see the bytes the client sent.
                headers=[(name.encode(), value.encode("latin-1"))
                         for name, value in headers.items()],
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            log.warning("forward-auth endpoint unreachable: %s", exc)
            raise Unavailable(
                "the authentication service is unavailable; retry shortly",
                code="auth_unavailable",
            ) from exc
        if response.status_code == 401:
            raise Unauthorized("the credentials were refused", code="invalid_token")
        if response.status_code == 403:
            raise Forbidden("the credentials are not allowed here", code="forbidden")
        if response.status_code >= 500 or not 200 <= response.status_code < 300:
            log.warning("forward-auth endpoint answered %s", response.status_code)
            raise Unavailable(
                "the authentication service failed; retry shortly", code="auth_unavailable"
            )
        claims: dict[str, Any] = {}
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                body = None
            if isinstance(body, dict):
                claims.update(body)
        for claim, header in self._claim_headers.items():
            value = response.headers.get(header)
            if value is not None:
                claims[claim] = value
        subject = claims.get(self._subject_claim)
        return Identity(
            subject=str(subject) if subject is not None else None,
            claims=claims,
            expires_at=_expiry(claims.get("exp")),
        )

    async def close(self) -> None:
        return None


def _expiry(exp: Any) -> float | None:
    """The answer's ``exp`` as a JWT's is read (a numeric string counts). An ``exp`` that is not
    a time at all is the API's mistake: fail closed (503) rather than ignore a deadline."""
    if exp is None:
        return None
    try:
        return expiry_of(exp)
    except ValueError as exc:
        log.warning("forward-auth endpoint answered an unreadable exp: %s", exc)
        raise Unavailable(
            "the authentication service answered with an exp claim that is not a number of "
            "seconds since 1970; fix that answer, or leave exp out",
            code="auth_unavailable",
        ) from None


def _claim_headers(raw: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {claim.strip(): header.strip() for claim, header in pairs}
