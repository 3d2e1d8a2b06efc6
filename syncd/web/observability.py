"""One ASGI middleware that counts, times and logs every HTTP request.

Labels are bounded: the way in and the route *template* (``/api/v1/sync/{collection}``; for the
rxdb-server protocol the action too, when it is one of its three), never the raw path, which
holds collection names, ids and sometimes tokens. A request no route matched is ``unmatched``.
Websocket connections are not HTTP requests: their streams and RxDB's websocket messages are
counted where they are served.

Log lines (syncd/logs.py renders them as text or JSON): a refused request (4xx) at info with its
error code, a failed one (5xx) at warning, every other one at debug. They carry the way in,
route, collection, status, duration and the caller's subject (``credentials.identify`` leaves it
in the scope), never credentials: no headers, no query string.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncd import metrics
from syncd.admin.errors import ErrorRing

log = logging.getLogger("syncd.request")

SUBJECT_SCOPE_KEY = "syncd.subject"
# What a request is labelled with when the client left before it was answered (nginx's code).
CLIENT_CLOSED = 499
_RXDB_SERVER_ACTIONS = frozenset(("pull", "push", "pullStream"))


class ObservabilityMiddleware:
    def __init__(
        self, app: ASGIApp, ways: Mapping[str, str], errors: ErrorRing | None = None
    ) -> None:
        """``ways`` maps route templates to their way in (``native``, ``rxdb-server``, ...);
        other routes are ``other``. ``errors`` collects the error answers for /admin."""
        self.app = app
        self._errors = errors
        self._ways = dict(ways)
        # Label lookups take a lock and build a key; a request reuses its route's children.
        self._counters: dict[tuple[str, str, str, str], Any] = {}
        self._timers: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        responded = 0.0
        status = 0
        code: str | None = None
        body_seen = False

        async def observed_send(message: Message) -> None:
            nonlocal responded, status, code, body_seen
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = time.perf_counter()
            elif message["type"] == "http.response.body" and not body_seen:
                body_seen = True
                if status >= 400:  # error bodies are one small JSON envelope
                    code = _error_code(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except ClientDisconnect:
            # Nothing can be answered; the exception handler decides how loudly to log it.
            status = status or CLIENT_CLOSED
            raise
        finally:
            # No answer sent and no ClientDisconnect: the server's error handler answers 500.
            self._finished(scope, status or 500, code, started,
                           responded or time.perf_counter())

    def _labels(self, scope: Scope) -> tuple[str, str]:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if not isinstance(template, str):
            return "other", "unmatched"
        way = self._ways.get(template, "other")
        if way == "rxdb-server":
            action = scope.get("path_params", {}).get("action")
            if action in _RXDB_SERVER_ACTIONS:
                template = template.replace("{action}", action)
        return way, template

    def _finished(
        self, scope: Scope, status: int, code: str | None, started: float, responded: float
    ) -> None:
        way, route = self._labels(scope)
        method = scope["method"]
        duration = responded - started
        timer = self._timers.get((way, route, method))
        if timer is None:
            timer = self._timers[way, route, method] = metrics.HTTP_DURATION.labels(
                way, route, method)
        timer.observe(duration)
        key = (way, route, method, str(status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.HTTP_REQUESTS.labels(*key)
        counter.inc()
        if status == CLIENT_CLOSED:
            return  # the exception handler logs it (at debug: the client chose to leave)
        if status >= 400 and self._errors is not None:
            self._errors.record(status, code, route)
        level = (logging.WARNING if status >= 500 else logging.INFO if status >= 400
                 else logging.DEBUG)
        if not log.isEnabledFor(level):
            return
        duration_ms = round(duration * 1000, 3)
        collection = scope.get("path_params", {}).get("collection")
        subject = scope.get(SUBJECT_SCOPE_KEY)
        event = ("request failed" if status >= 500 else "request refused" if status >= 400
                 else "request")
        log.log(
            level, "%s %s %s %s%s (%.1f ms, way %s, collection %s, subject %s)",
            event, scope["method"], route, status, f" {code}" if code else "", duration_ms,
            way, collection, subject,
            extra={"event": event, "way": way, "method": scope["method"], "route": route,
                   "status": status, "code": code, "duration_ms": duration_ms,
                   "collection": collection, "subject": subject},
        )


def _error_code(body: bytes) -> str | None:
    """The ``code`` of syncd's error envelope ``{"error": {"code": ...}}`` (or of rxdb-server's
    426 ``{"code": 426, ...}``); None when the body is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    error = value.get("error")
    found = error.get("code") if isinstance(error, dict) else value.get("code")
    return str(found) if isinstance(found, (str, int)) else None
