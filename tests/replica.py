"""A Python stand-in for an RxDB client's downstream, for stream tests.

It behaves as RxDB's replication does with a live ``stream$``: on every (re)connect and on every
``"RESYNC"`` it runs the pull iteration from its checkpoint until a short page; a stream frame
stores its documents and replaces the checkpoint. It reconnects (to the next node, if several
are given) when the stream closes, and records what it saw so tests can check order and gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import websockets

Doc = dict[str, Any]


class Replica:
    def __init__(
        self,
        urls: list[str],
        collection: str,
        *,
        page: int = 50,
        filter: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> None:
        self.urls = urls
        self.collection = collection
        self.page = page
        # A partial replication (docs/partial-sync.md): its filter, sent on every pull and
        # stream; and the bearer token of its caller (a query parameter on the socket).
        self.filter = filter
        self.token = token
        self.received: list[Doc] = []  # every document, from pulls and frames, in order
        self.docs: dict[str, Doc] = {}
        self.checkpoint: dict[str, Any] | None = None
        self.frames = 0
        self.resyncs = 0
        self.connects = 0
        self.frame_versions: dict[str, list[Any]] = {}  # versions per id, from frames only
        self.arrivals: list[tuple[float, list[Doc]]] = []  # when each frame arrived
        self.subscribed = asyncio.Event()
        self.close_codes: list[int | None] = []
        self._node = 0
        self._ws: websockets.ClientConnection | None = None

    async def drop(self) -> None:
        """Close the current socket, as a network change would: the replica reconnects."""
        if self._ws is not None:
            await self._ws.close()

    @property
    def node(self) -> str:
        return self.urls[self._node % len(self.urls)]

    async def run(self, stop: asyncio.Event, *, max_queue: int | None = 16) -> None:
        """Replicate until ``stop`` is set; survives node deaths by moving to the next node."""
        async with httpx.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                ws_url = self.node.replace("http://", "ws://") + (
                    f"/api/v1/sync/{self.collection}/stream"
                )
                query = {
                    **({"filter": orjson.dumps(self.filter).decode()} if self.filter else {}),
                    **({"access_token": self.token} if self.token else {}),
                }
                if query:
                    ws_url += "?" + urlencode(query)
                try:
                    async with websockets.connect(ws_url, max_queue=max_queue,
                                                  open_timeout=10) as ws:
                        self.connects += 1
                        self._ws = ws
                        await self._consume(ws, http, stop)
                        if stop.is_set():
                            return
                        self.close_codes.append(ws.close_code)
                except (TimeoutError, OSError, websockets.WebSocketException, httpx.TransportError):
                    pass
                self._node += 1
                await asyncio.sleep(0.05)

    async def _consume(
        self, ws: websockets.ClientConnection, http: httpx.AsyncClient, stop: asyncio.Event
    ) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receive = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({receive, stopping},
                                             return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    return
                message = receive.result()
                if message == '"RESYNC"':
                    self.resyncs += 1
                    await self.pull_all(http)
                    self.subscribed.set()
                    continue
                frame = orjson.loads(message)
                self.frames += 1
                self.arrivals.append((time.monotonic(), frame["documents"]))
                self.received.extend(frame["documents"])
                for doc in frame["documents"]:
                    self.frame_versions.setdefault(doc["id"], []).append(doc.get("n"))
                    self.docs[doc["id"]] = doc
                self.checkpoint = frame["checkpoint"]
        finally:
            stopping.cancel()

    async def pull_all(self, http: httpx.AsyncClient) -> None:
        while True:
            params: dict[str, str] = {"limit": str(self.page)}
            if self.checkpoint is not None:
                params["checkpoint"] = orjson.dumps(self.checkpoint).decode()
            if self.filter:
                params["filter"] = orjson.dumps(self.filter).decode()
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            response = await http.get(
                f"{self.node}/api/v1/sync/{self.collection}", params=params, headers=headers
            )
            response.raise_for_status()
            body = response.json()
            self.received.extend(body["documents"])
            for doc in body["documents"]:
                self.docs[doc["id"]] = doc
            if body["documents"]:
                self.checkpoint = body["checkpoint"]
            if len(body["documents"]) < self.page:
                return


async def stop_all(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    stop.set()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
