"""What ``syncd serve`` answers on its port while it waits for its database.

Orchestrators decide from the probes: ``/healthz`` is 200 (the process is alive: do not restart
it, which would only be a crash loop), ``/readyz`` and every other route are 503
``database_unavailable`` (send no traffic yet; clients retry). Once the database is up, this
server closes and the real application binds the same port.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import orjson
import uvicorn

from syncd import __version__

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

_HEALTHY = orjson.dumps({"status": "ok", "version": __version__})
_WAITING = orjson.dumps({"error": {
    "code": "database_unavailable",
    "message": "syncd is waiting for its database (SYNCD_DATABASE_URL) to answer; retry shortly",
}})


async def app(
    scope: Scope,
    _receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting answers the upgrade with 403; clients reconnect later.
        await send({"type": "websocket.close", "code": 1013})
        return
    if scope["type"] != "http":
        return
    healthy = scope["path"] == "/healthz"
    status, body = (200, _HEALTHY) if healthy else (503, _WAITING)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if not healthy:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Stopped(Exception):
    """SIGTERM or SIGINT arrived while waiting: stop without serving."""


async def serve_while(work: Awaitable[T], host: str, port: int) -> T:
    """Run ``work`` while answering probes on ``host:port``; closed again when it ends.
    ``Stopped`` when told to stop first (``work`` is cancelled then)."""
    config = uvicorn.Config(app, host=host, port=port, lifespan="off", access_log=False,
                            log_config=None)
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT while it serves and raises them again when it is done;
    # noting them here (instead of the caller's handlers raising SystemExit or
    # KeyboardInterrupt inside the event loop) turns them into a plain return.
    noted: list[int] = []
    previous = {number: signal.signal(number, lambda signum, _frame: noted.append(signum))
                for number in (signal.SIGTERM, signal.SIGINT)}
    # Its start-up and shutdown lines would read as if syncd were serving; keep warnings only.
    quiet = logging.getLogger("uvicorn.error")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    working = asyncio.ensure_future(work)
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.wait({working, serving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        working.cancel()
        server.should_exit = True
        await serving
        quiet.setLevel(level)
        for number, handler in previous.items():
            signal.signal(number, handler)
    if noted or working.cancelled():
        raise Stopped
    return working.result()
