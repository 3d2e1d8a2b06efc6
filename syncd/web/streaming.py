"""Relaying a hub subscriber to a websocket: shared by the native stream and RxDB's websocket."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from syncd.auth.identity import Identity
from syncd.auth.recheck import watch
from syncd.exceptions import SyncdError
from syncd.subscriber import END, EXPIRED, GONE, RESYNC, Frame, Sink, Subscriber
from syncd.web.draining import RawSocket, raw_socket
from syncd.web.responses import DATABASE_UNAVAILABLE
from syncd.wire import RESYNC as RESYNC_TEXT

log = logging.getLogger("syncd.web")

# Close codes. 1012 (service restart) and 1013 (try again later) make clients reconnect, to
# another node if there is one; 4000 + HTTP status for a request that will not work as sent.
CLOSE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
# The credentials expired during the stream: reconnect with fresh ones (like HTTP 401).
CLOSE_REAUTHENTICATE = 4401


async def relay(
    websocket: WebSocket, subscriber: Subscriber, frame_text: Callable[[bytes], str],
    transport: str = "native", *, identity: Identity | None = None,
) -> None:
    """Send the subscriber's frames until the client leaves, its credentials expire or are
    revoked, or the node shuts down. One task per stream watches for the client leaving, a
    timer for the expiry, and (revocable credentials) a task rechecks them; each frame costs
    only the send.

    Under ``syncd serve`` each frame is encoded into websocket bytes once for all sockets, and
    the hub's feed writes it to an idle socket directly (``Subscriber.sink``); frames that
    cannot be written at once (flow control) are queued and sent from here, in order."""
    raw = raw_socket(websocket)
    encode = _frame_encoder(frame_text)
    if raw is not None:
        subscriber.sink = _sink(raw, transport, encode)
    watcher = asyncio.create_task(_until_closed(websocket, subscriber))
    expires_at = None if identity is None else identity.expires_at
    expiry = (
        None
        if expires_at is None
        else asyncio.get_running_loop().call_later(
            max(0.0, expires_at - time.time()), subscriber.interrupt, EXPIRED
        )
    )
    refused: list[SyncdError] = []  # why a recheck ended the stream

    def credentials_ended(error: SyncdError) -> None:
        refused.append(error)
        subscriber.interrupt(EXPIRED)  # drops what is queued: not one more frame

    recheck = None if identity is None else watch(
        identity, credentials_ended, lambda: subscriber.claims
    )
    try:
        while True:
            item = await subscriber.next()
            if isinstance(item, Frame):
                if raw is not None:
                    await raw.send(item.encoded(transport, encode))
                else:
                    await websocket.send_text(item.wrapped(transport, frame_text))
            elif item is RESYNC:
                await websocket.send_text(RESYNC_TEXT)
            elif item is EXPIRED:
                if refused:  # 4401 when revoked, 1013 when they could not be confirmed
                    await close_for(websocket, refused[0])
                else:
                    await websocket.close(CLOSE_REAUTHENTICATE, "credentials expired; reconnect")
                return
            elif item is END:
                await websocket.close(CLOSE_RESTART, "syncd node shutting down; reconnect")
                return
            else:  # GONE
                return
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client went away while we were sending
    finally:
        subscriber.sink = None
        watcher.cancel()
        if expiry is not None:
            expiry.cancel()
        if recheck is not None:
            recheck.cancel()


def text_frame(payload: bytes) -> bytes:
    """A whole websocket text frame as a server sends it: FIN, unmasked, uncompressed."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def _frame_encoder(frame_text: Callable[[bytes], str]) -> Callable[[bytes], bytes]:
    def encode(body: bytes) -> bytes:
        return text_frame(frame_text(body).encode())

    return encode


def _sink(raw: RawSocket, transport: str, encode: Callable[[bytes], bytes]) -> Sink:
    def sink(frame: Frame) -> bool:
        return raw.write(frame.encoded(transport, encode))

    return sink


async def _until_closed(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Drain incoming messages (the native stream expects none); when the client disconnects,
    stop the relay."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            subscriber.interrupt(GONE)
            return


async def close_for(websocket: WebSocket, exc: Exception) -> None:
    """Close an accepted websocket with a code that says whether retrying can help."""
    if isinstance(exc, SyncdError) and exc.status < 500:
        # A close reason may hold 123 bytes of UTF-8.
        reason = exc.message.encode()[:120].decode(errors="ignore")
        await websocket.close(4000 + exc.status, reason)
        return
    if not isinstance(exc, (SyncdError, *DATABASE_UNAVAILABLE)):
        log.error("stream failed", exc_info=exc)
    await websocket.close(CLOSE_TRY_AGAIN, "syncd cannot serve this stream right now")
