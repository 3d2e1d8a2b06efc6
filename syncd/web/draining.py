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

Under another server (or a plain ``uvicorn syncd.web.app:create_app``) there is no drain:
``on_shutdown`` and ``on_late_frames`` return False and sockets close the way that server closes
them.
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


try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn < 0.35: no drain, uvicorn's own protocol
    PROTOCOL = "auto"
else:

    class DrainingWebSocketProtocol(WebSocketsSansIOProtocol):
        """uvicorn's websocket protocol, with a ``Drain`` offered to the application."""

        _drain: Drain | None = None

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # the upgrade was accepted: the application runs
                self._drain = Drain()
                scope.setdefault("extensions", {})[EXTENSION] = {"drain": self._drain}

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
