"""What unauthenticated RxDB websockets may make a node hold.

RxDB's websocket client sends the requests it queued while offline before its ``auth`` message,
so ``/rxdb/ws`` keeps what arrives before authentication for a few seconds. Without bounds an
anonymous client could make the node hold ``SYNCD_MAX_BODY_BYTES`` per socket. A socket that is
not authenticated yet may hold ``SOCKET_BYTES`` of received frames (a normal client's burst is a
few KB), and all such sockets of one worker process together ``NODE_BYTES``; a frame that does
not fit closes its socket instead of being kept. Single messages are bounded before they are
read (``draining.UNAUTHENTICATED_MESSAGE_BYTES``).
"""

from __future__ import annotations

import time

SOCKET_BYTES = 256 * 1024
NODE_BYTES = 16 * 1024 * 1024
# A flood of refusals is logged once per this many seconds, not once per socket.
WARN_EVERY_SECONDS = 10.0


class PreAuthBudget:
    """The bytes held for unauthenticated sockets in this process, against ``limit``."""

    def __init__(self, limit: int = NODE_BYTES) -> None:
        self.limit = limit
        self.held = 0
        self._refused = 0
        self._warned_at = -WARN_EVERY_SECONDS

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes; False (and nothing counted) when they do not fit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size

    def refused(self) -> int | None:
        """Count a socket closed for the node's bound; the sockets refused since the last
        warning when it is time to log one, else None."""
        self._refused += 1
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_SECONDS:
            return None
        count, self._refused, self._warned_at = self._refused, 0, now
        return count
