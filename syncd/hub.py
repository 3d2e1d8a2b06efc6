"""The node's change feed: one reader per (collection, partition, filter), fanned out to
subscribers (a filter is partial replication's effective filter; None for everything).

On a wake-up a feed reads the new changes once (the same pull query clients use, from the feed's
own position), serializes them once into a ``Frame``, and offers that same frame to every
subscriber. Subscribers never cause queries of their own in the steady state.

Wake-ups come from three places: this node's own commits (at once), other nodes' batched
notifications (``db/signals.py``), and a poll of every streamed feed's head in one statement,
which also finds rows written with plain SQL and rows that waited behind a long transaction.

Continuity: a subscriber receives every frame after the feed position at which it joined; the
transport tells the client to resync when it joins, so its own pull covers everything before.
A subscriber whose buffer overflows loses its queued frames and gets a resync marker instead:
it catches up by pulling, and never makes the feed or the other subscribers wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from syncd import checkpoint as checkpoints
from syncd import metrics
from syncd.checkpoint import Position
from syncd.db.store import DocumentStore
from syncd.filters import Filter
from syncd.subscriber import FeedKey, Frame, Subscriber
from syncd.wire import page_body

log = logging.getLogger("syncd.hub")

PartitionKey = tuple[uuid.UUID, str]


@dataclass(frozen=True, slots=True)
class FeedRead:
    """One read of the unfiltered feed: the documents to send and their checkpoint (when there
    are any), how far the read went, and whether the page was full (more may follow at once)."""

    documents: list[str]
    checkpoint: dict[str, Any] | None
    read_to: Position
    full: bool


@dataclass(frozen=True, slots=True)
class RoutedRead:
    """One read of a partition's changes for all its filtered feeds: per filter the documents
    to send and their checkpoint (only filters that got something), how far the read went."""

    read_to: Position
    full: bool
    frames: dict[Filter, tuple[list[str], dict[str, Any] | None]]


# Reads a partition's changes after a position (at most ``limit``) for these filters, from the
# primary when asked to (this node's own commit, which a replica may not have replayed yet).
RouteReader = Callable[[Position, int, Sequence[Filter], bool], Awaitable[RoutedRead]]
# Commits per feed whose lag to their frame is timed at once (syncd_stream_feed_lag_seconds).
MAX_TIMED_COMMITS = 10_000


class Feed:
    """The subscribers of one (collection, partition, filter) and what they were sent.

    The unfiltered feed reads its partition's changes itself; the filtered feeds of a partition
    are served by its ``Router``, which reads once for all of them."""

    def __init__(self, hub: Hub, key: FeedKey, router: Router | None = None) -> None:
        self.hub = hub
        self.key = key
        self.router = router
        self.position: Position | None = None
        self.subscribers: set[Subscriber] = set()
        # The same subscribers by owner: a push waits only for its own caller's streams, and
        # must not walk every subscriber of a busy feed to find them.
        self.owners: dict[Hashable, set[Subscriber]] = {}
        self.wake = asyncio.Event()
        self.frames = 0  # frames offered so far; the number of the newest one
        # Pushes waiting for the feed to read their changes: (their last position, future of
        # the number of the frame that holds it).
        self._readers: list[tuple[Position, asyncio.Future[int]]] = []
        # This node's commits not yet offered, oldest first: (their last position, when the
        # commit returned), for syncd_stream_feed_lag_seconds.
        self.commits: deque[tuple[Position, float]] = deque()
        self.local = False  # woken by this node's own commit: read the primary
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Task[None] = (
            router.ready if router is not None else asyncio.create_task(self._start())
        )
        self._filtered = "no" if key[2] is None else "yes"  # the metrics' label
        metrics.STREAM_FEEDS.labels(self._filtered).inc()

    async def _start(self) -> None:
        self.position = (await self.hub.store.heads([self.key[:2]]))[0]
        self.task = asyncio.create_task(self._run(), name=f"syncd-feed-{self.key[0]}")

    async def _read(self, after: Position, limit: int, primary: bool) -> FeedRead:
        """The unfiltered feed's read: the partition's changes, as a client's pull reads them."""
        store = self.hub.store
        page = await store.pull(self.key[0], self.key[1], after, limit, primary=primary)
        if page.last is None:
            return FeedRead([], None, after, False)
        checkpoint = checkpoints.encode(page.last, store.epoch)
        return FeedRead(page.documents, checkpoint, page.last, len(page.documents) >= limit)

    async def _run(self) -> None:
        limit = self.hub.frame_limit
        while True:
            await self.wake.wait()
            self.wake.clear()
            assert self.position is not None
            try:
                while True:
                    primary, self.local = self.local, False
                    read = await self._read(self.position, limit, primary)
                    metrics.STREAM_FEED_READS.labels(self._filtered).inc()
                    self.deliver(read.documents, read.checkpoint, read.read_to)
                    if not read.full:
                        break
            except Exception as exc:  # any failure: retry later, the position is kept
                self.hub.database_failed(exc)
                await asyncio.sleep(self.hub.retry_seconds)
                self.wake.set()

    def deliver(
        self, documents: list[str], checkpoint: dict[str, Any] | None, read_to: Position
    ) -> None:
        """Offer what a read found to every subscriber; the feed has read up to ``read_to``."""
        if documents:
            self.frames += 1
            frame = Frame(page_body(documents, checkpoint), self.frames)
            sent = 0
            for subscriber in tuple(self.subscribers):
                sent += subscriber.offer(frame)
            metrics.STREAM_FRAMES_SENT.inc(sent)
        if self.position is None or read_to > self.position:
            self.position = read_to
            if self.commits:
                self._observe_lag()
            if self._readers:
                self._release_readers()

    def when_read(self, position: Position) -> asyncio.Future[int]:
        """A future of the number of the frame that carries ``position`` (or a later one)."""
        reader = asyncio.get_running_loop().create_future()
        if self.position is not None and self.position >= position:
            reader.set_result(self.frames)
        else:
            self._readers.append((position, reader))
        return reader

    def time_commit(self, upto: Position) -> None:
        """Start timing this node's commit up to ``upto`` until a frame carries it."""
        if self.position is not None and self.position >= upto:
            metrics.FEED_LAG.observe(0.0)  # a poll read and offered it before we got here
        # Bounded: behind a long transaction the oldest commits are the ones worth timing.
        elif len(self.commits) < MAX_TIMED_COMMITS:
            self.commits.append((upto, time.monotonic()))

    def _observe_lag(self) -> None:
        assert self.position is not None
        now = time.monotonic()
        while self.commits and self.commits[0][0] <= self.position:
            metrics.FEED_LAG.observe(now - self.commits.popleft()[1])

    def _release_readers(self) -> None:
        assert self.position is not None
        waiting = []
        for position, reader in self._readers:
            if reader.done():
                continue
            if position <= self.position:
                reader.set_result(self.frames)
            else:
                waiting.append((position, reader))
        self._readers = waiting

    async def stop(self) -> None:
        metrics.STREAM_FEEDS.labels(self._filtered).dec()
        for _, reader in self._readers:
            if not reader.done():
                reader.set_result(self.frames)
        self._readers.clear()
        if self.router is not None:
            return  # the router's tasks are the router's
        tasks = [t for t in (self.ready, self.task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Router:
    """Reads a partition's changes once for all the filtered feeds streamed from it, and hands
    each feed what concerns its filter (syncd/partial.py routes them). One statement per wake-up
    whatever the number of filters: with a read per filter, a push to a partition streamed under
    100 filters cost 100 statements, 99 of them finding nothing (BENCHMARKS.md §8)."""

    def __init__(self, hub: Hub, key: PartitionKey, reader: RouteReader) -> None:
        self.hub = hub
        self.key = key
        self.reader = reader
        self.feeds: dict[Filter, Feed] = {}
        self.position: Position | None = None
        self.wake = asyncio.Event()
        self.local = False  # woken by this node's own commit: read the primary
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Task[None] = asyncio.create_task(self._start())

    async def _start(self) -> None:
        self.position = (await self.hub.store.heads([self.key]))[0]
        self.task = asyncio.create_task(self._run(), name=f"syncd-router-{self.key[0]}")

    async def _run(self) -> None:
        limit = self.hub.frame_limit
        while True:
            await self.wake.wait()
            self.wake.clear()
            assert self.position is not None
            try:
                while True:
                    primary, self.local = self.local, False
                    # Only the feeds this read was for get its results (and its position):
                    # a feed that joined meanwhile starts with the next read.
                    feeds = tuple(self.feeds.items())
                    read = await self.reader(
                        self.position, limit, [flt for flt, _ in feeds], primary
                    )
                    metrics.STREAM_FEED_READS.labels("yes").inc()
                    for flt, feed in feeds:
                        documents, checkpoint = read.frames.get(flt, ([], None))
                        feed.deliver(documents, checkpoint, read.read_to)
                    self.position = max(self.position, read.read_to)
                    if not read.full:
                        break
            except Exception as exc:  # any failure: retry later, the position is kept
                self.hub.database_failed(exc)
                await asyncio.sleep(self.hub.retry_seconds)
                self.wake.set()

    async def stop(self) -> None:
        tasks = [t for t in (self.ready, self.task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Hub:
    def __init__(
        self,
        store: DocumentStore,
        *,
        frame_limit: int,
        buffer_bytes: int,
        poll_seconds: float,
        retry_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.frame_limit = frame_limit
        self.retry_seconds = retry_seconds
        self._buffer_bytes = buffer_bytes
        self._poll_seconds = poll_seconds
        # Tells the other nodes (set once signals exist); None on a single node.
        self.publish: Callable[[uuid.UUID], None] | None = None
        self._feeds: dict[FeedKey, Feed] = {}
        # The filters streamed per (collection, partition): a commit wakes each of them.
        self._partitions: dict[PartitionKey, set[FeedKey]] = {}
        # One router per (collection, partition) with filtered feeds: reads once for them all.
        self._routers: dict[PartitionKey, Router] = {}
        self._poller: asyncio.Task[None] | None = None
        self._database_failing = False
        self._stopping: set[asyncio.Task[None]] = set()
        # Open subscribers per way in, for the admin page's heartbeat (syncd/admin/heartbeat.py).
        self.ways: Counter[str] = Counter()

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name="syncd-hub-poll")

    def end_streams(self) -> None:
        """The node is going down: tell every stream to end now, so that its client
        reconnects (to another node) instead of waiting for the connection to be cut."""
        for feed in self._feeds.values():
            for subscriber in feed.subscribers:
                subscriber.end()

    async def close(self) -> None:
        """End every stream (the transports close them so that clients reconnect elsewhere)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        feeds, self._feeds = list(self._feeds.values()), {}
        self._partitions.clear()
        routers, self._routers = list(self._routers.values()), {}
        for router in routers:
            await router.stop()
        for feed in feeds:
            metrics.STREAM_SUBSCRIBERS.dec(len(feed.subscribers))
            for subscriber in feed.subscribers:
                self.ways[subscriber.way] -= 1
                subscriber.end()
            await feed.stop()

    @property
    def subscriber_count(self) -> int:
        return sum(len(feed.subscribers) for feed in self._feeds.values())

    async def subscribe(
        self, collection_id: uuid.UUID, partition: str, owner: Hashable = None,
        way: str = "other", flt: Filter | None = None, route: RouteReader | None = None,
    ) -> Subscriber:
        """Register a subscriber; every change after this moment reaches it (or a RESYNC).
        A filtered subscriber shares the feed of its filter; the partition's router (which
        reads with ``route``) serves every filtered feed of the partition."""
        key = (collection_id, partition, flt)
        feed = self._feeds.get(key)
        if feed is None:
            router = None
            if flt is not None:
                assert route is not None
                pkey = (collection_id, partition)
                router = self._routers.get(pkey)
                if router is None:
                    router = self._routers[pkey] = Router(self, pkey, route)
            feed = self._feeds[key] = Feed(self, key, router)
            if router is not None and flt is not None:
                router.feeds[flt] = feed
            self._partitions.setdefault((collection_id, partition), set()).add(key)
        subscriber = Subscriber(key, self._buffer_bytes, owner, feed.frames, way)
        feed.subscribers.add(subscriber)
        feed.owners.setdefault(owner, set()).add(subscriber)
        metrics.STREAM_SUBSCRIBERS.inc()
        self.ways[way] += 1
        try:
            await asyncio.shield(feed.ready)
        except BaseException:
            self.unsubscribe(subscriber)
            raise
        if feed.position is None and feed.router is not None:
            feed.position = feed.router.position  # from here on the router serves it
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.close()
        feed = self._feeds.get(subscriber.key)
        if feed is None or subscriber not in feed.subscribers:
            return
        feed.subscribers.remove(subscriber)
        owned = feed.owners[subscriber.owner]
        owned.discard(subscriber)
        if not owned:
            del feed.owners[subscriber.owner]
        metrics.STREAM_SUBSCRIBERS.dec()
        self.ways[subscriber.way] -= 1
        if not feed.subscribers:
            del self._feeds[subscriber.key]
            streamed = self._partitions[subscriber.key[:2]]
            streamed.discard(subscriber.key)
            if not streamed:
                del self._partitions[subscriber.key[:2]]
            router, flt = feed.router, subscriber.key[2]
            if router is not None and flt is not None:
                router.feeds.pop(flt, None)
                if not router.feeds:
                    del self._routers[router.key]
                    self._stop_later(router.stop())
            self._stop_later(feed.stop())

    def _stop_later(self, stop: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the event loop holds tasks only weakly.
        stopping = asyncio.create_task(stop)
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)

    def committed(
        self, collection_id: uuid.UUID, partition: str, upto: Position | None = None
    ) -> None:
        """This node committed changes (up to ``upto``): wake the local feed now, tell the
        other nodes soon."""
        for key in self._partitions.get((collection_id, partition), ()):
            feed = self._feeds[key]
            if feed.router is None:
                feed.local = True
                feed.wake.set()
            if upto is not None:
                feed.time_commit(upto)
        router = self._routers.get((collection_id, partition))
        if router is not None:
            router.local = True
            router.wake.set()
        if self.publish is not None:
            self.publish(collection_id)

    async def echoed(
        self, collection_id: uuid.UUID, partition: str, owner: Hashable, upto: Position,
        wait_seconds: float,
    ) -> None:
        """Return once every stream of ``owner`` on this node for this (collection, partition)
        has been sent the frame holding the changes up to ``upto`` (this node's own commit),
        or at the latest after ``wait_seconds``.

        Why: RxDB holds stream events back while a push runs, then lets a held-back master
        state overwrite the local document if that still equals what it last pushed. An echo
        of push n that arrives after the answer to push n is applied after push n+1 was made,
        rolls the document back, and the next edit conflicts and is lost. Sending the echo
        before the answer (RxDB's own websocket server does the same) closes that window.

        A stream that is not sent the echo in time (slow, stuck, flow-controlled) is told to
        RESYNC instead, and pushes stop waiting for it until it has caught up. When the feed
        itself cannot read the change in time (an older transaction still holds the horizon:
        no pull could see it either), the push is answered without a RESYNC."""
        if wait_seconds <= 0:
            return
        feeds = []
        for key in self._partitions.get((collection_id, partition), ()):
            feed = self._feeds[key]
            own = feed.owners.get(owner)
            if feed.position is not None and own and not all(s.lagging for s in own):
                feeds.append((feed, own, feed.when_read(upto)))
        if not feeds:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        pending = [reader for _, _, reader in feeds if not reader.done()]
        if pending:
            await asyncio.wait(pending, timeout=wait_seconds)
        waiting: list[tuple[Subscriber, asyncio.Future[None]]] = []
        for _feed, own, reader in feeds:
            if not reader.done():
                reader.cancel()
                log.debug("push answered before its echo: the change is not readable yet "
                          "(an older transaction holds the pull horizon)")
                continue
            number = reader.result()
            waiting.extend(
                (subscriber, waiter)
                for subscriber in tuple(own)
                if not subscriber.lagging
                and (waiter := subscriber.when_sent(number)) is not None
            )
        if not waiting:
            return
        await asyncio.wait([waiter for _, waiter in waiting],
                           timeout=max(0.0, deadline - loop.time()))
        for subscriber, waiter in waiting:
            if not waiter.done():
                waiter.cancel()
                subscriber.lagging = True
                subscriber.resync("echo_lag")

    def changed_elsewhere(self, collection_ids: set[uuid.UUID]) -> None:
        for (collection_id, _), router in self._routers.items():
            if collection_id in collection_ids:
                router.wake.set()
        for (collection_id, _, _), feed in self._feeds.items():
            if collection_id in collection_ids:
                feed.wake.set()

    def database_failed(self, exc: Exception) -> None:
        if not self._database_failing:
            log.warning("cannot read changes from PostgreSQL: %s", exc)
        self._database_failing = True

    def _database_back(self) -> None:
        """Nothing was skipped while PostgreSQL was away (feeds keep their positions), but the
        clients' pushes failed meanwhile: a resync makes them pull and push again at once."""
        self._database_failing = False
        log.info("reading changes from PostgreSQL again; resyncing subscribers")
        for feed in self._feeds.values():
            for subscriber in tuple(feed.subscribers):
                subscriber.resync("database_back")
            feed.wake.set()
        for router in self._routers.values():
            router.wake.set()

    def _readers(self) -> list[tuple[PartitionKey, Position, asyncio.Event]]:
        """What reads the database for streams: unfiltered feeds and routers, with positions."""
        readers: list[tuple[PartitionKey, Position, asyncio.Event]] = [
            (feed.key[:2], feed.position, feed.wake) for feed in self._feeds.values()
            if feed.router is None and feed.position is not None
        ]
        readers.extend((key, router.position, router.wake)
                       for key, router in self._routers.items() if router.position is not None)
        return readers

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            readers = self._readers()
            if not readers:
                continue
            partitions = list(dict.fromkeys(key for key, _, _ in readers))
            try:
                found = await self.store.heads(partitions)
            except Exception as exc:  # the feeds keep their positions; try again next tick
                self.database_failed(exc)
                continue
            if self._database_failing:
                self._database_back()
            head_of = dict(zip(partitions, found, strict=True))
            for key, position, wake in readers:
                if head_of[key] > position:
                    wake.set()
