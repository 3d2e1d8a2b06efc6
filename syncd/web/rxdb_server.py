"""The rxdb-server protocol: what ``replicateServer`` of npm ``rxdb-server`` speaks.

The client's ``url`` is ``{prefix}/{collection}/{schemaVersion}`` (rxdb-protocol.md §3, §8(a)):

* ``GET  …/pull?lwt=&id=&limit=`` → ``{"documents": [...], "checkpoint": {"id", "lwt"}}``
* ``POST …/push`` (JSON array of push rows) → the conflicting master documents
* ``GET  …/pullStream`` → Server-Sent Events, one unnamed ``data:`` event per change batch
* any method on ``…/{k}``, ``…/{k}/`` or ``…/{k}/…`` for a schema version ``k`` older than the
  collection's → 426, before authentication, which cancels the outdated client.

The client only understands a few statuses: 401 (retried with the app's new headers), 403
(cancels; ``forbidden$``) and 426 (cancels; ``outdatedClient$``). Anything else is retried forever
unless its body parses as a JSON object *without* a truthy ``error`` key, so every error body here
is the service's ``{"error": {...}}`` envelope. Choices made for this client are written down in
docs/rxdb-compat.md: a push refused for the content of its documents (422 on the native API)
answers 403, and a stream that cannot be served or can no longer be kept continuous is ended
(never a ``"RESYNC"`` event, which crashes the client; never a 5xx, after which newer clients stop
reconnecting).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import Receive, Scope, Send

from syncd.auth.identity import Identity
from syncd.auth.recheck import watch
from syncd.exceptions import BadRequest, Forbidden, NotFound, SyncdError, Unprocessable
from syncd.service import Collection, SyncService
from syncd.subscriber import EXPIRED, GONE, IDLE, Frame, Sink, Subscriber
from syncd.web.bodies import parse_limit, read_json
from syncd.web.credentials import identify
from syncd.web.draining import RawHttpBody, http_chunk, raw_http_body
from syncd.web.responses import DATABASE_UNAVAILABLE, JSONBytes
from syncd.wire import json_array, page_body

log = logging.getLogger("syncd.web")

# The reconnect delay a stream asks for. Clients wait 1 s (eventsource 2, rxdb-server 15.x) or
# 3 s (eventsource 3+, browsers) by default; one value for all of them.
SSE_RETRY_MS = 1000
# ... and after a stream that could not be served (database or authenticator unavailable).
SSE_RETRY_AFTER_FAILURE_MS = 5000

_VERSION = re.compile(r"0|[1-9][0-9]{0,8}")
# What JavaScript's parseFloat reads: leading whitespace, then the longest numeric prefix.
_JS_FLOAT = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_ENDPOINTS = {"pull": "GET", "push": "POST", "pullStream": "GET"}
_FILTER_ERRORS = frozenset({"invalid_filter", "filter_too_large"})


def routes(prefix: str) -> list[BaseRoute]:
    """The routes under ``prefix`` (``SYNCD_RXDB_SERVER_PREFIX``; empty serves at the root)."""
    app = _AnyMethod(endpoint)
    return [
        Route(prefix + "/{collection}/{version}", app),
        Route(prefix + "/{collection}/{version}/", app),
        Route(prefix + "/{collection}/{version}/{action}", app),
        # A filtered replication (docs/partial-sync.md): the client's url ends in
        # /filter/<encodeURIComponent(JSON)>, since it cannot carry a query string.
        Route(prefix + "/{collection}/{version}/filter/{filter:path}/{action}", app),
    ]


class _AnyMethod:
    """An endpoint routed for every method: an outdated version answers 426 to all of them."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self._app = request_response(handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


async def endpoint(request: Request) -> Response:
    if request.path_params.get("action") == "pullStream" and request.method == "GET":
        try:
            return await _dispatch(request)
        except Exception as exc:
            status = exc.status if isinstance(exc, SyncdError) else (
                exc.status_code if isinstance(exc, HTTPException) else 500
            )
            if status < 500:
                raise  # 401, 403, 404, 426 …: a JSON answer the client can act on
            # A 5xx makes eventsource 3+ (rxdb-server 16.2+) and browsers give up for good;
            # an empty 200 stream makes every client resync and reconnect a little later.
            _log_failure(exc)
            return EventStream(retry_ms=SSE_RETRY_AFTER_FAILURE_MS)
    return await _dispatch(request)


async def _dispatch(request: Request) -> Response:
    service: SyncService = request.app.state.service
    name: str = request.path_params["collection"]
    raw_version: str = request.path_params["version"]
    action: str | None = request.path_params.get("action")
    version = int(raw_version) if _VERSION.fullmatch(raw_version) else None

    collection: Collection | None = None
    missing: NotFound | None = None
    try:
        collection = await service.collection(name)
    except NotFound as exc:
        missing = exc
    if collection is not None and version is not None and version < collection.schema_version:
        return outdated(version, collection.schema_version)

    # Everything else needs credentials, also to learn that something does not exist.
    identity = await identify(request)
    if missing is not None:
        raise missing
    assert collection is not None
    if version is None or version > collection.schema_version:
        raise NotFound(
            f"collection {name!r} is at schema version {collection.schema_version}; there is no "
            f"version {raw_version!r}. Point the client at "
            f"{request.app.state.settings.rxdb_server_prefix}/{name}/"
            f"{collection.schema_version}, or register the newer schema with "
            f"`syncd collections add {name} --schema FILE.json`",
            code="unknown_version",
        )
    method = _ENDPOINTS.get(action or "")
    if method is None or action is None:
        raise NotFound(
            f"no such endpoint: replicateServer's url is …/{name}/{version}, and its endpoints "
            "are /pull (GET), /push (POST) and /pullStream (GET)",
            code="not_found",
        )
    if request.method != method:
        raise HTTPException(
            405, f"{action} accepts {method} only, not {request.method}", {"Allow": method}
        )
    try:
        if action == "pull":
            return await _pull(request, service, name, identity)
        if action == "push":
            return await _push(request, service, name, identity)
        return await _pull_stream(request, service, name, identity)
    except BadRequest as exc:
        if exc.code not in _FILTER_ERRORS:
            raise
        # The filter is in the client's url: it would be retried forever (any 400 is).
        # 403 cancels the replication and tells the app (forbidden$).
        raise Forbidden(exc.message, code=exc.code) from exc


def outdated(version: int, newest: int) -> JSONBytes:
    """426 exactly as rxdb-server words it; the client cancels and emits ``outdatedClient$``."""
    message = f"Outdated version {version} (newest is {newest})"
    return JSONBytes(orjson.dumps({"code": 426, "error": True, "message": message}), 426)


# --- pull -----------------------------------------------------------------------------------


async def _pull(request: Request, service: SyncService, name: str, identity: Identity) -> Response:
    params = request.query_params
    try:
        lwt = parse_lwt(params.get("lwt"))
    except BadRequest:
        lwt = 0  # `lwt=undefined`: a foreign checkpoint without lwt, served from the beginning
    # The checkpoint id is an opaque token of unreserved URL characters (syncd/checkpoint.py),
    # so it arrives intact whether the client URL-encodes it (17.2+) or not (15.22.0).
    token = params.get("id") or ""
    limit = parse_limit(params.get("limit"))
    checkpoint = None if token == "" and lwt == 0 else {"id": token, "lwt": lwt}
    try:
        result = await service.pull(
            name, identity, checkpoint, limit, filter_text=_filter(request)
        )
    except BadRequest as exc:
        if exc.code != "invalid_checkpoint" or checkpoint is None:
            raise
        # Not a checkpoint syncd issued: one the app kept from another server under the same
        # replicationIdentifier, or `lwt=undefined` from one without `lwt`. A 400 would be
        # retried forever; serving from the beginning re-sends current states only.
        log.info("rxdb-server pull of %r from a foreign checkpoint; serving it from the "
                 "beginning: %s", name, exc.message)
        result = await service.pull(name, identity, None, limit, filter_text=_filter(request))
    if not result.documents:  # an empty page echoes what it was asked for
        return JSONBytes(page_body([], {"id": token, "lwt": lwt}))
    return JSONBytes(page_body(result.documents, result.checkpoint))


def parse_lwt(raw: str | None) -> int | float:
    """The ``lwt`` query value as JavaScript's ``parseFloat`` reads it; absent or empty is 0.

    Whole numbers come back as ``int`` (checkpoints are integers below 2**53, which a double
    holds exactly), so that they compare and echo exactly. What is not a finite number
    (``undefined``, ``NaN``) is a BadRequest."""
    if raw is None or raw == "":
        return 0
    match = _JS_FLOAT.match(raw.lstrip())
    value = float(match.group(0)) if match else math.nan
    if not math.isfinite(value):
        raise BadRequest(
            f"lwt must be a number (the lwt of the previous pull's checkpoint), got {raw!r}",
            code="invalid_checkpoint",
        )
    return int(value) if value.is_integer() else value


# --- push -----------------------------------------------------------------------------------


async def _push(request: Request, service: SyncService, name: str, identity: Identity) -> Response:
    body = await read_json(request, request.app.state.settings.max_body_bytes)
    try:
        conflicts = await service.push(name, identity, body, filter_text=_filter(request))
    except Unprocessable as exc:
        # Documents the collection's schema refuses will be refused on every retry, and this
        # client retries anything but 401/403/426 forever with the same batch, stalling all its
        # later writes. 403 cancels the replication and tells the app (forbidden$).
        raise Forbidden(exc.message, code=exc.code, details=exc.details) from exc
    return JSONBytes(json_array(conflicts))


# --- pullStream -----------------------------------------------------------------------------


async def _pull_stream(
    request: Request, service: SyncService, name: str, identity: Identity
) -> Response:
    # Registered before the response headers go out: the client's resync pull starts when the
    # stream opens, so a change is covered either by that pull or by this subscription.
    _, subscriber = await service.subscribe(
        name, identity, way="rxdb-server", filter_text=_filter(request)
    )
    return EventStream(
        subscriber=subscriber,
        service=service,
        keepalive_seconds=request.app.state.settings.sse_keepalive_seconds,
        identity=identity,
    )


def _filter(request: Request) -> str | None:
    """The filter of a filtered replication's url (…/filter/<JSON>), already URL-decoded."""
    value: str | None = request.path_params.get("filter")
    return value


def sse_event(body: bytes) -> str:
    """One unnamed event carrying a frame's JSON (``data: {...}`` and a blank line)."""
    text = body.decode()
    if "\n" not in text and "\r" not in text:
        return f"data: {text}\n\n"
    # JSON holds raw line breaks only as whitespace between tokens: split there, and the
    # client's EventSource joins the data lines with "\n" again.
    return "".join(f"data: {line}\n" for line in _NEWLINE.split(text)) + "\n"


class EventStream(Response):
    """A Server-Sent Events answer relaying a hub subscriber; without one, it ends at once.

    The stream ends (the client resyncs and reconnects) when the subscriber lost continuity
    (RESYNC: the client read too slowly), the node shuts down (END), or the credentials expire
    or a recheck finds them revoked (the reconnect then gets a 401). The subscription is
    dropped when the client leaves."""

    def __init__(
        self,
        *,
        subscriber: Subscriber | None = None,
        service: SyncService | None = None,
        keepalive_seconds: float = 0,
        identity: Identity | None = None,
        retry_ms: int = SSE_RETRY_MS,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        # A fresh list per response: middleware may add headers to it.
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"connection", b"keep-alive"),
            (b"x-accel-buffering", b"no"),
        ]
        self._subscriber = subscriber
        self._service = service
        self._keepalive = keepalive_seconds
        self._identity = identity
        self._retry_ms = retry_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.create_task(_until_disconnected(receive, self._subscriber))
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            # Flushes at once (proxies too) and sets the reconnect delay.
            await send({"type": "http.response.body",
                        "body": f"retry: {self._retry_ms}\n\n".encode(), "more_body": True})
            if self._subscriber is not None:
                await self._relay(self._subscriber, send, raw_http_body(scope))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away while we were sending
        finally:
            gone.cancel()
            if self._subscriber is not None and self._service is not None:
                self._service.unsubscribe(self._subscriber)

    async def _relay(
        self, subscriber: Subscriber, send: Send, raw: RawHttpBody | None = None
    ) -> None:
        """Send the subscriber's frames as events. Timers mark expiry and idle keep-alives on
        the subscriber itself, so each frame costs only the send (no task per frame).

        Under ``syncd serve`` each frame's event is encoded into a body chunk once for every
        stream, and the hub's feed writes it to an idle stream directly (``Subscriber.sink``);
        what cannot be written at once (flow control) is queued and sent from here, in order."""
        if raw is not None:
            subscriber.sink = _sink(raw)
        loop = asyncio.get_running_loop()
        timers: dict[str, asyncio.TimerHandle] = {}
        expires_at = None if self._identity is None else self._identity.expires_at
        if expires_at is not None:
            delay = max(0.0, expires_at - time.time())
            timers["expiry"] = loop.call_later(delay, subscriber.interrupt, EXPIRED)
        # Revoked (or unconfirmable) credentials end the stream like expired ones.
        recheck = None if self._identity is None else watch(
            self._identity, lambda _error: subscriber.interrupt(EXPIRED),
            lambda: subscriber.claims,
        )
        if self._keepalive:

            def keepalive() -> None:
                subscriber.idle()
                timers["keepalive"] = loop.call_later(self._keepalive, keepalive)

            timers["keepalive"] = loop.call_later(self._keepalive, keepalive)
        try:
            while True:
                item = await subscriber.next()
                if item is IDLE:
                    body = b": keepalive\n\n"
                elif isinstance(item, Frame):
                    if raw is not None:
                        await raw.send(item.encoded(SSE_CHUNK, _sse_chunk))
                        continue
                    body = item.wrapped("sse", sse_event).encode()
                else:
                    return  # RESYNC, END, EXPIRED, GONE: the stream ends (never a RESYNC event)
                await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            subscriber.sink = None
            for timer in timers.values():
                timer.cancel()
            if recheck is not None:
                recheck.cancel()


SSE_CHUNK = "sse-chunk"  # a frame's event as one chunk of a chunked response body


def _sse_chunk(body: bytes) -> bytes:
    return http_chunk(sse_event(body).encode())


def _sink(raw: RawHttpBody) -> Sink:
    def sink(frame: Frame) -> bool:
        return raw.write(frame.encoded(SSE_CHUNK, _sse_chunk))

    return sink


async def _until_disconnected(receive: Receive, subscriber: Subscriber | None) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a server that fails receive() once the client left
        pass
    if subscriber is not None:
        subscriber.interrupt(GONE)


def _log_failure(exc: Exception) -> None:
    if isinstance(exc, (SyncdError, *DATABASE_UNAVAILABLE)):
        log.warning("cannot serve an rxdb-server pullStream right now: %s", exc)
    else:
        log.error("rxdb-server pullStream failed", exc_info=exc)
