"""Graceful shutdown for websockets that still owe their client answers.

On shutdown uvicorn closes every websocket at once (code 1012). A protocol whose client waits
for a reply to each request (RxDB's websocket replication has no timeout and no retry) would be
left waiting forever for the answers to the requests in flight. ``syncd serve`` therefore runs
uvicorn with ``DrainingWebSocketProtocol``: a connection whose application claimed its ``Drain``
is only *told* that the node is shutting down; the application finishes what it was asked, then
closes with 1012 itself. Connections that did not claim it (the native stream) close as before,
and a connection that takes longer than ``DRAIN_LIMIT_SECONDS`` is closed regardless.

The same subclass hands the application the *late frames*: data frames that reach a socket after
its close frame was sent. The client sent them before it could see the close; uvicorn drops them,
and a client that never times a request out would wait for their answers forever
(``on_late_frames``; rxdb_ws.py answers them on the client's next socket).

The subclasses also offer raw writes for live streams (``RawSocket`` for websockets,
``RawHttpBody`` for Server-Sent Events, with ``http=HTTP_PROTOCOL``): a change frame is encoded
once and written to each connection's transport directly, instead of through one ASGI send (and
one task wake-up) per connection. Applications fall back to the ASGI send without them.

Before the application vouches for a connection's credentials, a websocket message may hold at
most ``UNAUTHENTICATED_MESSAGE_BYTES``: a frame header announcing more closes the connection with
1009 before any of its payload is buffered, so an anonymous client cannot make the node hold a
message of ``SYNCD_MAX_BODY_BYTES``. The application lifts the bound once it has authenticated
the connection (``lift_message_limit``); then uvicorn's ``ws_max_size`` applies.

Under another server (or a plain ``uvicorn syncd.web.app:create_app``) there is no drain:
``on_shutdown`` and ``on_late_frames`` return False and sockets close the way that server closes
them; ``lift_message_limit`` returns False, and only that server's own message limit applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

log = logging.getLogger("syncd.web")

EXTENSION = "syncd.drain"
# Longer than an application's own drain, shorter than `syncd serve`'s graceful shutdown
# timeout (10 s), after which uvicorn cancels whatever still runs.
DRAIN_LIMIT_SECONDS = 8.0


class Drain:
    """One connection's shutdown notice (the application claims it with a callback), and where
    its late frames go."""

    __slots__ = ("_callback", "late_frames")

    def __init__(self) -> None:
        self._callback: Callable[[], None] | None = None
        self.late_frames: Callable[[bytes], None] | None = None

    @property
    def claimed(self) -> bool:
        return self._callback is not None

    def claim(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def request(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def _drain_of(websocket: WebSocket) -> Drain | None:
    extension = (websocket.scope.get("extensions") or {}).get(EXTENSION)
    drain = extension.get("drain") if isinstance(extension, dict) else None
    return drain if isinstance(drain, Drain) else None


def on_shutdown(websocket: WebSocket, callback: Callable[[], None]) -> bool:
    """Ask to be called (instead of being closed) when the server shuts down; False when the
    server offers no drain."""
    drain = _drain_of(websocket)
    if drain is None:
        return False
    drain.claim(callback)
    return True


def on_late_frames(websocket: WebSocket, callback: Callable[[bytes], None]) -> bool:
    """Ask for the data frames that arrive after this socket sent its close frame (the payload
    of each, in order); False when the server does not offer them."""
    drain = _drain_of(websocket)
    if drain is None:
        return False
    drain.late_frames = callback
    return True


LIMIT_EXTENSION = "syncd.message_limit"
# What one message may hold until the application has authenticated the connection: RxDB's
# client sends a few requests of a few KB before its ``auth`` message.
UNAUTHENTICATED_MESSAGE_BYTES = 256 * 1024


class MessageLimit:
    """Lifts one connection's message bound from the pre-authentication one to uvicorn's."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def lift(self) -> None:
        # websockets reads the bound again for every frame header it parses.
        self._protocol.conn.max_message_size = self._protocol.config.ws_max_size


def lift_message_limit(websocket: WebSocket) -> bool:
    """Allow messages up to the server's ``ws_max_size`` from now on (call it once the
    connection is authenticated); False when the server applies no pre-authentication bound."""
    extension = (websocket.scope.get("extensions") or {}).get(LIMIT_EXTENSION)
    limit = extension.get("limit") if isinstance(extension, dict) else None
    if not isinstance(limit, MessageLimit):
        return False
    limit.lift()
    return True


def unauthenticated_message_bytes(ws_max_size: int | None) -> int:
    return UNAUTHENTICATED_MESSAGE_BYTES if ws_max_size is None else min(
        ws_max_size, UNAUTHENTICATED_MESSAGE_BYTES)


RAW_EXTENSION = "syncd.raw"


class RawSocket:
    """Writes whole, ready-made websocket frames straight to one connection's transport.

    A stream fanning one frame out to thousands of sockets encodes it once (server frames are
    unmasked, and ``syncd serve`` negotiates no compression, so the bytes are the same for
    every socket) and writes it here, skipping the ASGI send and its middleware per socket.
    Each write is one whole frame, so uvicorn's own pings and closes interleave safely; the
    application must not mix these writes with its own ASGI sends out of order."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def _open(self) -> bool:
        p = self._protocol
        return bool(
            p.handshake_complete and not p.close_sent and not p.disconnected
            and p.initial_response is None and not p.transport.is_closing()
        )

    def write(self, data: bytes) -> bool:
        """Write now, unless flow control paused the connection (a slow reader) or it is
        closed or closing: then False, and nothing was written."""
        if not self._protocol.writable.is_set() or not self._open():
            return False
        try:
            self._protocol.transport.write(data)
        except (OSError, RuntimeError):
            return False
        return True

    async def send(self, data: bytes) -> None:
        """Write once flow control allows; ``ConnectionResetError`` if the socket closed."""
        await self._protocol.writable.wait()
        if not self._open():
            raise ConnectionResetError("the websocket is closed")
        self._protocol.transport.write(data)


def raw_socket(websocket: WebSocket) -> RawSocket | None:
    """The connection's ``RawSocket``; None under another server (use the ASGI send)."""
    extension = (websocket.scope.get("extensions") or {}).get(RAW_EXTENSION)
    raw = extension.get("socket") if isinstance(extension, dict) else None
    return raw if isinstance(raw, RawSocket) else None


RAW_HTTP_EXTENSION = "syncd.raw_http"


class RawHttpBody:
    """The same for a streamed HTTP response (Server-Sent Events): writes whole, ready-made
    chunks (``http_chunk``) of a chunked response body straight to the connection's transport,
    once the application has started the response and until it ends it. Like ``RawSocket``,
    it bypasses ASGI middleware: fine for syncd, whose middleware (CORS) only adds headers."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    def _open(self) -> bool:
        c = self._cycle
        return bool(
            c.response_started and not c.response_complete and c.chunked_encoding
            and not c.disconnected and not c.transport.is_closing()
        )

    def write(self, chunk: bytes) -> bool:
        """Write now, unless flow control paused the connection or the response is not open:
        then False, and nothing was written."""
        if self._cycle.flow.write_paused or not self._open():
            return False
        try:
            self._cycle.transport.write(chunk)
        except (OSError, RuntimeError):
            return False
        return True

    async def send(self, chunk: bytes) -> None:
        """Write once flow control allows; ``ConnectionResetError`` if the response closed."""
        cycle = self._cycle
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if not self._open():
            raise ConnectionResetError("the response is closed")
        cycle.transport.write(chunk)


def http_chunk(data: bytes) -> bytes:
    """One chunk of a chunked HTTP/1.1 body, as uvicorn frames it."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def raw_http_body(scope: Any) -> RawHttpBody | None:
    """The response's ``RawHttpBody``; None under another server or HTTP protocol."""
    extension = (scope.get("extensions") or {}).get(RAW_HTTP_EXTENSION)
    body = extension.get("body") if isinstance(extension, dict) else None
    return body if isinstance(body, RawHttpBody) else None


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - without httptools uvicorn refuses to start, as asked
    HTTP_PROTOCOL = "httptools"
else:

    class RawBodyHttpProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, offering each request's ``RawHttpBody``."""

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = getattr(self, "cycle", None)
            # The application's task is created, not started: it sees the extension.
            if cycle is not None and cycle.scope is self.scope:
                extensions = self.scope.setdefault("extensions", {})
                extensions[RAW_HTTP_EXTENSION] = {"body": RawHttpBody(cycle)}

    HTTP_PROTOCOL = f"{__name__}:RawBodyHttpProtocol"


try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn < 0.35: no drain, uvicorn's own protocol
    PROTOCOL = "auto"
else:

    class DrainingWebSocketProtocol(WebSocketsSansIOProtocol):
        """uvicorn's websocket protocol, with a ``Drain`` offered to the application, and
        messages bounded by ``UNAUTHENTICATED_MESSAGE_BYTES`` until it lifts the bound."""

        _drain: Drain | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn.max_message_size = unauthenticated_message_bytes(self.config.ws_max_size)

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # the upgrade was accepted: the application runs
                self._drain = Drain()
                extensions = scope.setdefault("extensions", {})
                extensions[EXTENSION] = {"drain": self._drain}
                extensions[LIMIT_EXTENSION] = {"limit": MessageLimit(self)}
                if not self.conn.extensions:  # frames are sent as is: no permessage-deflate
                    extensions[RAW_EXTENSION] = {"socket": RawSocket(self)}

        def shutdown(self) -> None:
            drain = self._drain
            if (
                drain is not None and drain.claimed and self.handshake_complete
                and not self.close_sent and not self.disconnected
            ):
                drain.request()
                self.loop.call_later(DRAIN_LIMIT_SECONDS, self._end_drain)
                return
            super().shutdown()

        def send_receive_event_to_app(self) -> None:
            drain = self._drain
            if self.close_sent and drain is not None and drain.late_frames is not None:
                late = b"".join(self.frames)
                try:
                    drain.late_frames(late)
                except Exception:  # the connection is closing anyway; never break its reads
                    log.exception("handling a late websocket frame failed")
            super().send_receive_event_to_app()

        def _end_drain(self) -> None:
            if not self.disconnected:
                log.warning("a websocket did not finish draining in %ss; closing it",
                            DRAIN_LIMIT_SECONDS)
                super().shutdown()

    PROTOCOL = f"{__name__}:DrainingWebSocketProtocol"
