"""CORS for browsers: a small pure-ASGI middleware for the whole app (SYNCD_CORS_ORIGINS).

Browser clients send credentials (``credentials: 'include'`` in rxdb-server 16.17.2+, cookies,
``Authorization``), and with credentials a browser accepts only an ``Access-Control-Allow-Origin``
that names its own origin: ``*`` together with ``Access-Control-Allow-Credentials: true`` is
refused. So an allowed origin is always echoed, also when the setting is ``*`` (any origin), and
``*`` itself is never sent. A request from an origin that is not allowed gets no CORS headers at
all (the browser then blocks it); requests without ``Origin`` (servers, curl) pass untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_METHODS = "GET, POST"
# How long a browser may cache a preflight answer (seconds).
PREFLIGHT_MAX_AGE = "600"


class AllowedOrigins:
    """The browser origins of SYNCD_CORS_ORIGINS (``*``: any). Shared by CORS and by the rule
    that cookies count only from allowed origins (``syncd/web/credentials.py``)."""

    def __init__(self, origins: Iterable[str]) -> None:
        allowed = tuple(origins)
        self.any_origin = "*" in allowed
        self.origins = frozenset(o for o in allowed if o != "*")

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins


class CORSMiddleware:
    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.allowed = AllowedOrigins(origins)

    def allows(self, origin: str) -> bool:
        return self.allowed.allows(origin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or not self.allows(origin):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, headers, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A copy: a response may send a header list it shares with other responses.
                message["headers"] = list(message.get("headers", ()))
                response_headers = MutableHeaders(scope=message)
                response_headers["Access-Control-Allow-Origin"] = origin
                response_headers["Access-Control-Allow-Credentials"] = "true"
                response_headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, request: Headers, send: Send) -> None:
        headers = MutableHeaders()
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        requested = request.get("access-control-request-headers")
        if requested:
            # Any header the client wants to send (Authorization, custom auth headers): which
            # ones carry credentials is the authenticator's business, not the browser's.
            headers["Access-Control-Allow-Headers"] = requested
        headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        await send({"type": "http.response.start", "status": 204, "headers": headers.raw})
        await send({"type": "http.response.body", "body": b""})
