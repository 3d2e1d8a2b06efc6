"""One live stream's side of the hub: the frames it is sent, its bounded buffer, and the markers
that tell its transport to resync, end or keep alive (syncd/hub.py fans feeds out to these).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

from syncd import metrics
from syncd.filters import Filter

FeedKey = tuple[uuid.UUID, str, Filter | None]  # (collection id, partition, filter)


class Frame:
    """One batch of changes, serialized once for every subscriber and every transport.

    ``number`` counts the frames of its feed (1, 2, ...): "a subscriber has been sent every frame
    up to n" is how a push knows its echo went out (``Hub.echoed``)."""

    __slots__ = ("_encoded", "_wrapped", "body", "number")

    def __init__(self, body: bytes, number: int = 0) -> None:
        self.body = body
        self.number = number
        self._wrapped: dict[str, str] = {}
        self._encoded: dict[str, bytes] = {}

    def wrapped(self, transport: str, wrap: Callable[[bytes], str]) -> str:
        """The frame as a transport sends it, built once per transport."""
        text = self._wrapped.get(transport)
        if text is None:
            text = self._wrapped[transport] = wrap(self.body)
        return text

    def encoded(self, transport: str, encode: Callable[[bytes], bytes]) -> bytes:
        """The bytes a transport writes to each of its connections (e.g. a whole websocket
        frame: unmasked and uncompressed, it is the same for every connection), built once."""
        data = self._encoded.get(transport)
        if data is None:
            data = self._encoded[transport] = encode(self.body)
        return data


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


RESYNC: Final = _Marker("RESYNC")  # continuity is lost: the client must pull
END: Final = _Marker("END")  # the node is shutting down
# Set by the transport: the client left, or its credentials expired. Whatever is queued is moot.
GONE: Final = _Marker("GONE")
EXPIRED: Final = _Marker("EXPIRED")
# Set by the transport's keep-alive timer while nothing is queued: time to show it is alive.
IDLE: Final = _Marker("IDLE")

Item = Frame | _Marker
_FINAL = (END, GONE, EXPIRED)


Sink = Callable[[Frame], bool]


class Subscriber:
    """One stream's bounded outgoing buffer.

    A transport that can write a frame without waiting may set ``sink``: while its relay waits
    in ``next()`` with nothing queued, ``offer`` hands frames straight to the sink, so that a
    fan-out to thousands of subscribers costs one write each, not a task wake-up each. The sink
    returns False when it cannot write now (its connection is paused by flow control or
    closing); the frame is then queued, and the buffer limit and RESYNC rules apply as usual.
    Frames never overtake one another: the sink is used only while the queue is empty and the
    relay is parked (not in the middle of sending something it took from the queue).

    Delivery is tracked by frame number: ``sent`` is the newest frame this stream has written
    to its transport, or covered with a RESYNC it has written. A relay calls ``next()`` only
    after it finished sending what it took before, so entering ``next()`` is what marks the
    previous item as sent. Pushes wait on that (``when_sent``) before they are answered."""

    def __init__(
        self, key: FeedKey, max_bytes: int, owner: Hashable = None, joined_at: int = 0,
        way: str = "other",
    ) -> None:
        self.key = key
        self.way = way  # the way in that serves it (native, rxdb-server, rxdb-ws): /admin
        # The claims that decide what it may see: a recheck that finds them changed ends it.
        self.claims: frozenset[str] = frozenset()
        # Whose stream this is: a push waits for the streams of the identity that pushed.
        self.owner = owner
        self._max_bytes = max_bytes
        self._queue: deque[Item] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._parked = False
        self.sink: Sink | None = None
        self.overflows = 0
        # Frames before joining are the client's own pull's business (it starts with RESYNC).
        self.offered = joined_at  # the newest frame offered: written, queued or dropped
        self.sent = joined_at
        self._taken = joined_at  # what the item the relay is sending covers
        self._resync_covers = joined_at  # the frames the queued RESYNC stands for
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.closed = False
        # Told to resync because it did not keep up with a push's echo: pushes stop waiting
        # for it until it has caught up, so a stuck stream costs at most one push one wait.
        self.lagging = False

    def offer(self, frame: Frame) -> bool:
        """Write or queue the frame; False when it was dropped (the stream ends, or it
        overflowed and gets a RESYNC instead)."""
        self.offered = frame.number
        if not self._queue:
            sink = self.sink
            if self._parked and sink is not None and sink(frame):
                self._taken = frame.number
                self._mark_sent(frame.number)
                return True
        elif self._queue[-1] in _FINAL:
            return False
        if self._bytes + len(frame.body) > self._max_bytes:
            self.overflows += 1
            self.resync("overflow")
            return False
        self._queue.append(frame)
        self._bytes += len(frame.body)
        self._ready.set()
        return True

    def resync(self, reason: str | None = None) -> None:
        """Drop what is queued: the client's pull after RESYNC covers all of it. ``reason``
        names why continuity was lost (counted in ``syncd_stream_resyncs_total``); None for the
        RESYNC a stream starts with."""
        if self._queue and self._queue[-1] in _FINAL:
            return
        if reason is not None:
            metrics.STREAM_RESYNCS.labels(reason).inc()
        self._queue.clear()
        self._bytes = 0
        self._queue.append(RESYNC)
        self._resync_covers = self.offered
        self._ready.set()

    def end(self) -> None:
        self._queue.append(END)
        self._ready.set()
        self.close()

    def idle(self) -> None:
        """Queue an IDLE marker if nothing else is waiting to be sent."""
        if not self._queue:
            self._queue.append(IDLE)
            self._ready.set()

    def interrupt(self, marker: _Marker) -> None:
        """Stop now: drop what is queued and make ``next()`` return ``marker``."""
        self._queue.clear()
        self._bytes = 0
        self._queue.append(marker)
        self._ready.set()
        self.close()

    def close(self) -> None:
        """The stream is ending: nothing more will be sent, so no push waits for it."""
        self.closed = True
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def when_sent(self, number: int) -> asyncio.Future[None] | None:
        """A future done once frame ``number`` has been sent (or covered by a sent RESYNC, or
        the stream ended); None when that is already so."""
        if self.sent >= number or self.closed:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((number, waiter))
        return waiter

    def _mark_sent(self, number: int) -> None:
        if number <= self.sent:
            return
        self.sent = number
        if self._waiters:
            waiting = []
            for wanted, waiter in self._waiters:
                if wanted <= number:
                    if not waiter.done():
                        waiter.set_result(None)
                elif not waiter.done():
                    waiting.append((wanted, waiter))
            self._waiters = waiting

    async def next(self) -> Item:
        self._mark_sent(self._taken)  # the relay is back for more: what it took is written
        while not self._queue:
            self.lagging = False  # caught up
            self._ready.clear()
            self._parked = True
            try:
                await self._ready.wait()
            finally:
                self._parked = False
        item = self._queue.popleft()
        if isinstance(item, Frame):
            self._bytes -= len(item.body)
            self._taken = max(self._taken, item.number)
        elif item is RESYNC:
            self._taken = max(self._taken, self._resync_covers)
        return item
