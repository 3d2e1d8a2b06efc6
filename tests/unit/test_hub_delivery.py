"""Delivery tracking of a hub subscriber: which frame numbers count as sent, and when.

A push waits on ``when_sent`` (syncd/hub.py, ``Hub.echoed``), so these rules decide whether an
answer can overtake its echo: a frame counts as sent once a sink wrote it, or once the relay came
back to ``next()`` after taking it; a RESYNC covers every frame offered before it.
"""

from __future__ import annotations

import asyncio

from syncd.subscriber import GONE, RESYNC, Frame, Subscriber


def frame(number: int) -> Frame:
    return Frame(b"{}", number)


async def test_a_queued_frame_counts_as_sent_only_when_the_relay_comes_back() -> None:
    subscriber = Subscriber((None, ""), 1 << 20)  # type: ignore[arg-type]
    subscriber.offer(frame(1))
    waiter = subscriber.when_sent(1)
    assert waiter is not None
    assert await subscriber.next() is not None  # taken: being sent, not sent yet
    await asyncio.sleep(0)
    assert not waiter.done()
    relay = asyncio.create_task(subscriber.next())  # back for more: frame 1 is written
    await asyncio.sleep(0)
    assert waiter.done() and subscriber.sent == 1
    relay.cancel()


async def test_a_sink_write_counts_at_once_and_a_refused_one_queues() -> None:
    subscriber = Subscriber((None, ""), 1 << 20)  # type: ignore[arg-type]
    written: list[int] = []
    accept = True

    def sink(item: Frame) -> bool:
        if accept:
            written.append(item.number)
        return accept

    subscriber.sink = sink
    relay = asyncio.create_task(subscriber.next())
    await asyncio.sleep(0)  # parked
    subscriber.offer(frame(1))
    assert written == [1] and subscriber.sent == 1 and subscriber.when_sent(1) is None
    accept = False
    subscriber.offer(frame(2))  # flow control: queued, the relay wakes up to send it
    assert subscriber.sent == 1
    assert (await relay).number == 2  # type: ignore[union-attr]


async def test_a_resync_covers_what_was_offered_before_it() -> None:
    subscriber = Subscriber((None, ""), 1 << 20)  # type: ignore[arg-type]
    subscriber.offer(frame(1))
    subscriber.offer(frame(2))
    waiter = subscriber.when_sent(2)
    subscriber.resync()
    assert await subscriber.next() is RESYNC
    assert waiter is not None and not waiter.done()
    relay = asyncio.create_task(subscriber.next())
    await asyncio.sleep(0)
    assert waiter.done() and subscriber.sent == 2
    relay.cancel()


async def test_an_overflow_becomes_a_resync_that_covers_the_dropped_frames() -> None:
    subscriber = Subscriber((None, ""), 1024)  # type: ignore[arg-type]
    big = Frame(b"x" * 700, 1)
    subscriber.offer(big)
    subscriber.offer(Frame(b"y" * 700, 2))  # does not fit: everything queued is dropped
    assert subscriber.overflows == 1
    assert await subscriber.next() is RESYNC
    relay = asyncio.create_task(subscriber.next())
    await asyncio.sleep(0)
    assert subscriber.sent == 2
    relay.cancel()


async def test_a_stream_that_ends_releases_every_waiting_push() -> None:
    subscriber = Subscriber((None, ""), 1 << 20)  # type: ignore[arg-type]
    subscriber.offer(frame(1))
    waiter = subscriber.when_sent(1)
    subscriber.interrupt(GONE)
    assert waiter is not None and waiter.done()
    assert subscriber.when_sent(5) is None  # nothing more will be sent: nobody waits


async def test_a_subscriber_joining_late_owes_nothing_from_before() -> None:
    subscriber = Subscriber((None, ""), 1 << 20, owner="alice", joined_at=7)  # type: ignore[arg-type]
    assert subscriber.when_sent(7) is None  # its client's RESYNC pull covers frames 1..7
    assert subscriber.when_sent(8) is not None
