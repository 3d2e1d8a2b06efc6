"""Graceful shutdown for websockets that still owe their client answers.

On shutdown uvicorn closes every websocket at once (code 1012). A protocol whose client waits
for a reply to each request (RxDB's websocket replication has no timeout and no retry) would be
left waiting forever for the answers to the requests in flight. ``syncd serve`` therefore runs
uvicorn with ``DrainingWebSocketProtocol``: a connection whose application claimed its ``Drain``
is only *told* that the node is shutting down; the application finishes what it was asked, then
closes with 1012 itself. Connections that did not claim it (the native stream) close as before,
and a connection that takes longer than ``DRAIN_LIMIT_SECONDS`` is closed regardless.

Under another server (or a plain ``uvicorn syncd.web.app:create_app``) there is no drain:
``on_shutdown`` returns False and sockets close the way that server closes them.
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
    """One connection's shutdown notice; the application claims it with a callback."""

    __slots__ = ("_callback",)

    def __init__(self) -> None:
        self._callback: Callable[[], None] | None = None

    @property
    def claimed(self) -> bool:
        return self._callback is not None

    def claim(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def request(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def on_shutdown(websocket: WebSocket, callback: Callable[[], None]) -> bool:
    """Ask to be called (instead of being closed) when the server shuts down; False when the
    server offers no drain."""
    extension = (websocket.scope.get("extensions") or {}).get(EXTENSION)
    drain = extension.get("drain") if isinstance(extension, dict) else None
    if not isinstance(drain, Drain):
        return False
    drain.claim(callback)
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

        def _end_drain(self) -> None:
            if not self.disconnected:
                log.warning("a websocket did not finish draining in %ss; closing it",
                            DRAIN_LIMIT_SECONDS)
                super().shutdown()

    PROTOCOL = f"{__name__}:DrainingWebSocketProtocol"
