"""RxDB's websocket replication (``replicateWithWebsocketServer``) at one endpoint.

The client sends JSON text frames ``{"id", "collection", "method", "params"}`` and matches the
answers ``{"id", "collection", "result"}`` by ``id``; ``collection`` is the syncd collection name,
and one socket may carry several collections:

* ``masterChangesSince`` ``[checkpoint | null, batchSize]`` → ``{documents, checkpoint}``;
* ``masterWrite`` ``[rows]`` → the conflicting master documents;
* ``masterChangeStream$`` (id ``"stream"``) → no answer; the stream starts with
  ``"result": "RESYNC"``, then every change of the collection arrives as
  ``{"id": "stream", "collection", "result": {documents, checkpoint}}``, or ``"result": "RESYNC"``
  when the node cannot guarantee continuity (every RESYNC is sent twice: see ``_relay``);
* ``auth`` ``[headers]`` → no answer; the token is taken from the ``Authorization`` header.

The client's messages carry no schema version; its ``url`` can (``/rxdb/ws?schemaVersion=N``,
passed through unchanged). Every request of a socket that states a version older than the
collection's fails with ``outdated_schema`` (the client has no outdated signal; see
docs/rxdb-compat.md).

The client has no timeout and no retry for a request, so an unanswered one stalls it for good.
Hence every request is answered exactly once, in order, also when it fails (a pull with an empty
page echoing its checkpoint plus an ``error`` field, a write with ``result: null`` plus ``error``,
which the client retries), when the socket is closed for expired credentials, and when the node
shuts down (see ``draining.py``). A request that reaches the socket only after its close frame was
sent (the client sent it before it saw the close) cannot be answered there; it is answered, as a
failure, on the sockets the same identity opens on this node next (``LateAnswers``). See
docs/rxdb-compat.md for the behaviour in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from syncd import metrics
from syncd.auth.identity import Identity, identity_key
from syncd.auth.recheck import watch
from syncd.config import Settings
from syncd.exceptions import BadRequest, PayloadTooLarge, SyncdError, Unauthorized, Unavailable
from syncd.service import SyncService
from syncd.subscriber import END, RESYNC, Frame, Subscriber
from syncd.web import preauth
from syncd.web.credentials import identify, selected_subprotocol
from syncd.web.draining import lift_message_limit, on_late_frames, on_shutdown
from syncd.web.rxdb_ws_frames import (
    AUTH,
    PULL,
    STREAM,
    WRITE,
    Request,
    as_syncd_error,
    collection_name,
    envelope,
    failure,
    method_label,
    parse,
    pull_params,
    short,
    stream_frame,
    token_of,
)
from syncd.web.schema_version import stated_schema_version
from syncd.web.streaming import CLOSE_RESTART, close_for
from syncd.wire import json_array, page_body

log = logging.getLogger("syncd.web")


# Requests that arrive before the socket is authenticated wait for the ``auth`` message (after a
# reconnect the client flushes its queued requests first, then ``auth``, in the same burst), at
# most this long and this many, and at most ``preauth.SOCKET_BYTES`` of them (and of the node's
# ``preauth.NODE_BYTES``); then the socket is closed with 4401 (time, count) or 4413 / 1013 (size).
AUTH_WAIT_SECONDS = 3.0
AUTH_WAIT_FRAMES = 1000
# Received frames not yet handled; beyond this the socket is not read (TCP backpressure).
INBOX_FRAMES = 64
# After a pull failed on the server's side, the stream tells the client to pull again this much
# later (not at once, which would loop as fast as the failure repeats).
RESYNC_AFTER_FAILURE_SECONDS = 1.0
# On shutdown, requests that are still arriving are answered until the client is quiet for this
# long, for at most DRAIN_SECONDS; then the socket closes with 1012.
DRAIN_QUIET_SECONDS = 0.1
DRAIN_SECONDS = 5.0
# Failure answers to late requests wait this long, at most this many per node, for the client's
# next socket (RxDB reconnects within 1-10 s).
LATE_ANSWER_SECONDS = 60.0
LATE_ANSWER_LIMIT = 10_000
# After closing, how long to wait for the frames received before the close to be read.
CLOSE_READ_SECONDS = 1.0


class LateAnswers:
    """Answers owed to requests that arrived after their socket sent its close frame.

    Each is a failure (nothing was carried out), kept for ``LATE_ANSWER_SECONDS`` and sent on
    every socket the same identity authenticates on this node in that time: the client that
    sent the request opens one of them when it reconnects, and other clients of that identity
    ignore answers to ids they never sent. Sockets of other identities never see them.
    """

    def __init__(self, keep_seconds: float = LATE_ANSWER_SECONDS,
                 limit: int = LATE_ANSWER_LIMIT) -> None:
        self._keep_seconds = keep_seconds
        self._limit = limit
        self._answers: deque[tuple[float, Hashable, str]] = deque()

    def add(self, identity: Identity, answer: str) -> None:
        self._answers.append((time.monotonic(), identity_key(identity), answer))
        while len(self._answers) > self._limit:
            self._answers.popleft()

    def for_identity(self, identity: Identity) -> list[str]:
        oldest = time.monotonic() - self._keep_seconds
        while self._answers and self._answers[0][0] < oldest:
            self._answers.popleft()
        key = identity_key(identity)
        return [answer for _, owner, answer in self._answers if owner == key]


# Claims that change when a token is refreshed but decide nothing about what it may read.
_TIME_CLAIMS = frozenset({"exp", "iat", "nbf", "jti", "auth_time"})


def _scope_of(identity: Identity) -> tuple[Any, ...]:
    """What decides which partitions and collections an identity may read: two identities with
    the same scope (a refreshed token of the same user) may share streams."""
    claims = {k: v for k, v in identity.claims.items() if k not in _TIME_CLAIMS}
    return (identity.subject, identity.service, identity.acting_partition, claims)


@dataclass(frozen=True, slots=True)
class _Stop:
    rank: int  # a stronger reason replaces a weaker one
    error: SyncdError | None = None  # close for this error (None: 1012, node shutting down)


_DRAIN = _Stop(1)
_GONE = _Stop(3)  # the client left: nothing more can be sent


def _reject(error: SyncdError) -> _Stop:
    return _Stop(2, error)


class RxdbSocket:
    """One client socket: frames are handled one at a time, in the order they arrived."""

    def __init__(self, websocket: WebSocket, late_answers: LateAnswers,
                 budget: preauth.PreAuthBudget) -> None:
        self.websocket = websocket
        self.late_answers = late_answers
        self._budget = budget
        self._held = 0  # bytes of frames received before authentication, counted in _budget
        self.service: SyncService = websocket.app.state.service
        self.settings: Settings = websocket.app.state.settings
        self.identity: Identity | None = None
        self._auth_error: SyncdError = Unauthorized("not authenticated")
        self._auth_deadline = 0.0
        # Received before the socket authenticated: kept as received (a parsed request can
        # take many times its frame's size), parsed again when handled.
        self._waiting: deque[str | bytes] = deque()
        self._inbox: deque[str | bytes] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._stop: _Stop | None = None
        self._closed = False
        self._streams: dict[str, tuple[Subscriber, asyncio.Task[None]]] = {}
        self._resyncs: dict[str, asyncio.Task[None]] = {}
        # Rechecks of revocable credentials (recheck.py), for the identity they were started for.
        self._recheck: tuple[Identity | None, asyncio.Task[None] | None] = (None, None)
        # The schema version of the socket's URL (?schemaVersion=), for every collection on it;
        # one that is not a version fails each request with its 400.
        self._version_error: SyncdError | None = None
        self._schema_version: int | None = None
        try:
            self._schema_version = stated_schema_version(websocket)
        except SyncdError as exc:
            self._version_error = exc
        # A filtered replication's filter (?filter=<JSON>), for every collection on the socket
        # (docs/partial-sync.md); a bad one fails each request with its 400.
        self._filter: str | None = websocket.query_params.get("filter")

    async def run(self) -> None:
        # The upgrade's credentials are checked before it is accepted, so that the frames an
        # authenticated client sends first are never held to the pre-authentication bounds.
        await self._authenticate_connection()
        await self.websocket.accept(subprotocol=selected_subprotocol(self.websocket))
        self._auth_deadline = time.time() + AUTH_WAIT_SECONDS
        on_shutdown(self.websocket, lambda: self._stop_for(_DRAIN))
        on_late_frames(self.websocket, self._late_frame)
        reader = asyncio.create_task(self._read())
        try:
            if self.identity is not None:
                await self._send_late_answers()
            while (frame := await self._next()) is not None:
                await self._handle(frame)
            await self._finish()
            # Frames received after the last answers, before the close went out (the close
            # queued a disconnect behind them): their answers can only go to the next socket.
            for frame in self._inbox:
                self._late_frame(frame)
            self._inbox.clear()
            self._room.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), CLOSE_READ_SECONDS)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self._end_streams()
            self._release_held()

    # -- receiving -------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                while len(self._inbox) >= INBOX_FRAMES:
                    self._room.clear()
                    await self._room.wait()
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                frame = data if data is not None else message.get("bytes") or b""
                if self._closed:
                    self._late_frame(frame)
                    continue
                if self.identity is None and not self._hold(frame):
                    continue  # not kept: the socket closes for it
                self._inbox.append(frame)
                self._ready.set()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        self._stop_for(_GONE)

    async def _next(self) -> str | bytes | None:
        """The next frame to handle; None once the socket is to stop (``_stop`` says why)."""
        while self._stop is None:
            self._check_deadline()
            self._recheck_credentials()
            if self._inbox and self._stop is None:
                self._room.set()
                return self._inbox.popleft()
            self._ready.clear()
            deadline = self._deadline()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._ready.wait(), None if deadline is None else deadline - time.time()
                )
        return None

    @property
    def _serving(self) -> bool:
        return self._stop is None or self._stop is _DRAIN

    def _stop_for(self, stop: _Stop) -> None:
        if self._stop is None or stop.rank > self._stop.rank:
            self._stop = stop
        self._ready.set()

    # -- authentication --------------------------------------------------------------------

    async def _authenticate_connection(self) -> None:
        """Credentials of the upgrade request (query ``access_token``, ``Authorization``, a
        ``bearer.`` subprotocol); without valid ones, requests wait for the ``auth`` message."""
        try:
            self._authenticated(await identify(self.websocket))
        except SyncdError as exc:
            self._auth_error = exc
        except Exception as exc:
            self._auth_error = as_syncd_error(exc)

    async def _authenticate(self, request: Request) -> None:
        """The ``auth`` message: its headers' token replaces the connection's credentials."""
        token = token_of(request.params)
        if token is None and self.identity is not None:
            return  # nothing new to check
        try:
            identity = await identify(self.websocket, token)
        except Exception as exc:  # 401: 4401, the client reconnects; 503: 1013
            self._stop_for(_reject(as_syncd_error(exc)))
            return
        previous = self.identity
        self._authenticated(identity)
        if previous is not None and _scope_of(previous) != _scope_of(identity):
            await self._rescope_streams()
        await self._send_late_answers()
        while self._waiting and self._serving:
            waiting = parse(self._waiting.popleft())
            if waiting is not None:
                await self._dispatch(waiting)

    async def _rescope_streams(self) -> None:
        """Another identity took over the socket: every stream of the old one ends, with what
        was queued for it, before anything else is answered, and starts again under the new
        one, with a RESYNC as a new subscription does (RxDB's client does not subscribe again
        after ``auth``). A collection the new identity may not read gets no stream."""
        streams = list(self._streams.items())
        self._streams.clear()
        for _, (_, relay) in streams:
            relay.cancel()
        # Once the relays have stopped nothing more of theirs is sent; a relay is cancelled
        # either before it writes a frame or after the whole frame went out.
        await asyncio.gather(*(relay for _, (_, relay) in streams), return_exceptions=True)
        for name, (subscriber, _) in streams:
            self.service.unsubscribe(subscriber)  # with the frames still queued for it
            await self._subscribe(name)

    def _authenticated(self, identity: Identity) -> None:
        """From now on the socket is not held to the pre-authentication bounds."""
        self.identity = identity
        self._release_held()
        lift_message_limit(self.websocket)

    def _hold(self, frame: str | bytes) -> bool:
        """Count a frame received before authentication against the socket's and the node's
        bounds; False, and the socket is to close, when it does not fit."""
        size = sys.getsizeof(frame)  # what holding it costs (a str may take 4 bytes a char)
        if self._held + size > preauth.SOCKET_BYTES:
            self._stop_for(_reject(PayloadTooLarge(
                f"more than {preauth.SOCKET_BYTES} bytes arrived before the socket was "
                "authenticated; send the auth message first, or authenticate in the URL "
                "(?access_token=)", code="unauthenticated_too_large")))
            return False
        if not self._budget.take(size):
            refused = self._budget.refused() if self._stop is None else None
            if refused is not None:
                log.warning("rxdb websocket: unauthenticated sockets hold %s bytes on this "
                            "worker, its limit; closed %s more with 1013", self._budget.held,
                            refused)
            self._stop_for(_reject(Unavailable(
                "this node holds too many requests of unauthenticated sockets; authenticate "
                "in the URL (?access_token=) or retry shortly", code="unauthenticated_busy")))
            return False
        self._held += size
        return True

    def _release_held(self) -> None:
        self._budget.give(self._held)
        self._held = 0

    def _deadline(self) -> float | None:
        if self.identity is None:
            return self._auth_deadline
        return self.identity.expires_at

    def _check_deadline(self) -> None:
        deadline = self._deadline()
        if deadline is None or time.time() < deadline:
            return
        if self.identity is None:
            self._stop_for(_reject(self._auth_error))
        else:
            self._stop_for(_reject(Unauthorized("credentials expired; reconnect",
                                                code="credentials_expired")))

    def _recheck_credentials(self) -> None:
        """Keep revocable credentials rechecked on their schedule; a new identity (``auth``
        message) gets its own rechecks."""
        watched, task = self._recheck
        if watched is self.identity:
            return
        if task is not None:
            task.cancel()
        identity = self.identity
        self._recheck = (identity, None if identity is None else watch(
            identity, self._revoked,
            lambda: {c for subscriber, _ in self._streams.values() for c in subscriber.claims},
        ))

    def _revoked(self, error: SyncdError) -> None:
        """A recheck said no: not one more change goes out; close with 4401 (1013 when the
        credentials could not be confirmed), answering what was received as failures."""
        for _, relay in self._streams.values():
            relay.cancel()
        self._stop_for(_reject(error))

    # -- requests --------------------------------------------------------------------------

    async def _handle(self, frame: str | bytes) -> None:
        request = parse(frame)
        if request is None:
            return
        if request.method == AUTH and request.problem is None:
            await self._authenticate(request)
        elif self.identity is None:
            self._waiting.append(frame)  # its size is counted since it was received (_hold)
            if len(self._waiting) > AUTH_WAIT_FRAMES:
                self._stop_for(_reject(self._auth_error))
        else:
            await self._dispatch(request)

    async def _dispatch(self, request: Request) -> None:
        assert self.identity is not None
        started = time.perf_counter()
        ok = True
        if request.problem is not None:
            ok = await self._fail(request, request.problem)
        elif request.method == STREAM:
            await self._subscribe(request.collection)
        elif request.method == PULL:
            ok = await self._pull(request, self.identity)
        elif request.method == WRITE:
            ok = await self._write(request, self.identity)
        else:
            ok = await self._fail(request, BadRequest(
                f"unknown method {short(request.method)}; expected {PULL}, {WRITE}, "
                f"{STREAM} or {AUTH}", code="unknown_method",
            ))
        # Not HTTP requests, but what the operator wants to see like them: counted by method.
        method = method_label(request.method)
        metrics.WS_MESSAGES.labels(method, "ok" if ok else "error").inc()
        if method in (PULL, WRITE):
            metrics.WS_DURATION.labels(method).observe(time.perf_counter() - started)

    async def _pull(self, request: Request, identity: Identity) -> bool:
        try:
            checkpoint, limit = pull_params(request.params)
            result = await self.service.pull(
                collection_name(request), identity, checkpoint, limit, self._stated_version(),
                self._filter,
            )
        except Exception as exc:
            return await self._fail(request, exc)
        await self._send(envelope(request, page_body(result.documents, result.checkpoint)))
        return True

    async def _write(self, request: Request, identity: Identity) -> bool:
        params = request.params
        try:
            if not isinstance(params, list) or not params:
                raise BadRequest(f"{WRITE} params must be [rows]", code="invalid_params")
            conflicts = await self.service.push(
                collection_name(request), identity, params[0], self._stated_version(), self._filter
            )
        except Exception as exc:
            return await self._fail(request, exc)
        await self._send(envelope(request, json_array(conflicts)))
        return True

    async def _fail(self, request: Request, exc: Exception) -> bool:
        """Answer a request that failed; returns False (it did not succeed), for counting."""
        answer = failure(request, exc)
        if answer is None:
            return False
        error = as_syncd_error(exc)
        if error.status < 500:
            log.info("rxdb websocket: %s refused: %s %s", short(request.method), error.status,
                     error.code, extra={
                         "event": "request refused", "way": "rxdb-ws", "status": error.status,
                         "code": error.code, "method": method_label(request.method),
                         "collection": request.collection
                         if isinstance(request.collection, str) else None,
                         "subject": None if self.identity is None else self.identity.subject,
                     })
        if (request.method == PULL and error.status >= 500
                and isinstance(request.collection, str) and self._stop is None):
            self._resync_later(request.collection)
        await self._send(answer)
        if isinstance(error, Unauthorized):
            self._stop_for(_reject(error))
        return False

    def _stated_version(self) -> int | None:
        if self._version_error is not None:
            raise self._version_error
        return self._schema_version

    # -- late requests ---------------------------------------------------------------------

    def _late_frame(self, frame: str | bytes) -> None:
        """A frame that arrived after this socket sent its close frame: its failure answer waits
        for the identity's next socket (an unauthenticated socket's frames have no owner)."""
        request = parse(frame)
        if self.identity is None or request is None:
            return
        answer = failure(request, Unavailable(
            "the socket was closing when this request arrived; it was not carried out, send it "
            "again", code="socket_closing"))
        if answer is not None:
            log.info("rxdb websocket: a %s request arrived after the close; answering it on "
                     "the next socket", short(request.method))
            self.late_answers.add(self.identity, answer)

    async def _send_late_answers(self) -> None:
        assert self.identity is not None
        for answer in self.late_answers.for_identity(self.identity):
            await self._send(answer)

    # -- streams ---------------------------------------------------------------------------

    async def _subscribe(self, name: Any) -> None:
        """Subscribe before the next frame is handled, so the client's RESYNC pull that follows
        and the stream together miss nothing; the stream starts with a RESYNC of its own (see
        ``_relay``). A second subscribe to a collection is ignored."""
        if not isinstance(name, str) or name in self._streams:
            return
        assert self.identity is not None
        try:
            _, subscriber = await self.service.subscribe(
                name, self.identity, self._stated_version(), way="rxdb-ws",
                filter_text=self._filter,
            )
        except Exception as exc:
            error = as_syncd_error(exc)
            if error.status >= 500:  # the client reconnects, resubscribes and resyncs
                self._stop_for(_reject(error))
            else:  # an unknown or forbidden collection, an outdated client: its pulls say so
                log.info("rxdb websocket: no stream for %r: %s", name, error.message)
            return
        subscriber.resync()
        relay = asyncio.create_task(self._relay(name, subscriber))
        self._streams[name] = (subscriber, relay)

    async def _relay(self, name: str, subscriber: Subscriber) -> None:
        # Frames are encoded once per collection for every socket (the feed is per collection).
        transport = f"rxdb-ws:{name}"

        def wrap(body: bytes) -> str:
            return stream_frame(name, body)

        # RESYNC goes out twice in a row. RxDB's downstream (rxdb 15 and 17) takes queued stream
        # events in one batch and drops a RESYNC that follows events in that batch; it queues
        # them while a push runs, so the frames of a closed socket and the RESYNC the client
        # emits on reconnecting often meet there, and the pull that closes the gap never runs.
        # The stream's own RESYNCs after the client's survive; once one of them has run its
        # pull, RxDB skips the rest, so the normal case costs at most one pull.
        resync = wrap(b'"RESYNC"')
        while True:
            item = await subscriber.next()
            if item is END:
                self._stop_for(_DRAIN)
                return
            texts: tuple[str, ...] = (resync, resync) if item is RESYNC else ()
            if isinstance(item, Frame):
                texts = (item.wrapped(transport, wrap),)
            for text in texts:
                if not await self._send(text):
                    return

    def _resync_later(self, name: str) -> None:
        if name in self._resyncs:
            return

        async def resync() -> None:
            await asyncio.sleep(RESYNC_AFTER_FAILURE_SECONDS)
            del self._resyncs[name]
            stream = self._streams.get(name)
            if stream is not None:
                stream[0].resync("pull_failed")  # through the stream, in order with its frames
            else:
                await self._send(stream_frame(name, b'"RESYNC"'))

        self._resyncs[name] = asyncio.create_task(resync())

    async def _end_streams(self) -> None:
        if (recheck := self._recheck[1]) is not None:
            recheck.cancel()
        tasks = [relay for _, relay in self._streams.values()] + list(self._resyncs.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for subscriber, _ in self._streams.values():
            self.service.unsubscribe(subscriber)
        self._streams.clear()
        self._resyncs.clear()

    # -- sending and closing ---------------------------------------------------------------

    async def _send(self, text: str) -> bool:
        if self._closed:
            return False
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._stop_for(_GONE)
            return False
        return True

    async def _finish(self) -> None:
        """Leave no received request unanswered, then close with the stop's code."""
        stop = self._stop
        assert stop is not None
        if stop is _DRAIN:
            await self._drain()
            stop = self._stop
            assert stop is not None
        if stop is _GONE:
            return
        error = stop.error or Unavailable("this syncd node is shutting down; reconnect",
                                          code="shutting_down")
        await self._fail_unanswered(error)
        if stop.error is not None:
            # Requests the client sent before it could know the socket is closing (a write
            # racing the token's expiry) must be answered too: RxDB never times a request out.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_SECONDS
            while loop.time() < deadline:
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), DRAIN_QUIET_SECONDS)
                except TimeoutError:
                    break
                if self._stop is _GONE:
                    return
                await self._fail_unanswered(error)
        await self._end_streams()
        self._closed = True
        try:
            if stop.error is None:
                await self.websocket.close(CLOSE_RESTART, "syncd node shutting down; reconnect")
            else:
                await close_for(self.websocket, stop.error)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def _fail_unanswered(self, error: SyncdError) -> None:
        unanswered = [r for r in map(parse, [*self._waiting, *self._inbox]) if r is not None]
        self._waiting.clear()
        self._inbox.clear()
        self._room.set()
        for request in unanswered:
            await self._fail(request, error)

    async def _drain(self) -> None:
        """The node shuts down: answer what arrives until the client is quiet (or the drain
        time is up), including requests that were waiting for ``auth`` if it comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while self._stop is _DRAIN and loop.time() < deadline:
            if not self._inbox:
                self._ready.clear()
                quiet = min(DRAIN_QUIET_SECONDS, deadline - loop.time())
                try:
                    await asyncio.wait_for(self._ready.wait(), quiet)
                except TimeoutError:
                    return
                continue
            self._room.set()
            await self._handle(self._inbox.popleft())


def routes(settings: Settings) -> list[BaseRoute]:
    late_answers = LateAnswers()
    budget = preauth.PreAuthBudget()

    async def endpoint(websocket: WebSocket) -> None:
        await RxdbSocket(websocket, late_answers, budget).run()

    return [WebSocketRoute(settings.rxdb_ws_path, endpoint)]
