"""The native API (DESIGN.md §3): ``/api/v1/sync/{collection}`` pull and push.

Every request may state the client's RxDB schema version (``X-Syncd-Schema-Version`` or
``?schemaVersion=``; clients/js always does): an older one than the collection's is answered 426
``outdated_schema`` (a stream closes with 4426), so the app learns it must update instead of
syncing documents of the old shape until a push is refused.

A replication of a part of the partition sends its filter (``?filter=<URL-encoded JSON>``) on
the pull, the push and the stream alike (docs/partial-sync.md)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from syncd import checkpoint as checkpoints
from syncd.service import SyncService
from syncd.web.bodies import parse_limit, read_json
from syncd.web.credentials import identify, selected_subprotocol
from syncd.web.responses import JSONBytes
from syncd.web.schema_version import stated_schema_version
from syncd.web.streaming import close_for, relay
from syncd.wire import RESYNC, json_array, page_body


def _service(request: Request) -> SyncService:
    service: SyncService = request.app.state.service
    return service


async def pull(request: Request) -> JSONBytes:
    params = request.query_params
    checkpoint = checkpoints.parse_query_value(params.get("checkpoint"))
    version = stated_schema_version(request)
    result = await _service(request).pull(
        request.path_params["collection"],
        await identify(request),
        checkpoint,
        parse_limit(params.get("limit")),
        version,
        params.get("filter"),
    )
    return JSONBytes(page_body(result.documents, result.checkpoint))


async def push(request: Request) -> JSONBytes:
    identity = await identify(request)
    version = stated_schema_version(request)
    body = await read_json(request, request.app.state.settings.max_body_bytes)
    conflicts = await _service(request).push(
        request.path_params["collection"], identity, body, version,
        request.query_params.get("filter"),
    )
    return JSONBytes(json_array(conflicts))


async def pull_or_push(request: Request) -> JSONBytes:
    return await (push if request.method == "POST" else pull)(request)


# One route for both methods, so that a 405 lists every allowed method in its Allow header
# (with one route per method, Starlette answers for the first route only: "GET, HEAD").
routes: list[BaseRoute] = [
    Route("/api/v1/sync/{collection}", pull_or_push, methods=["GET", "POST"]),
]


async def stream(websocket: WebSocket) -> None:
    """Live changes: ``"RESYNC"`` once subscribed, then ``{documents, checkpoint}`` frames."""
    service: SyncService = websocket.app.state.service
    try:
        identity = await identify(websocket)
        _, subscriber = await service.subscribe(
            websocket.path_params["collection"], identity, stated_schema_version(websocket),
            way="native", filter_text=websocket.query_params.get("filter"),
        )
    except Exception as exc:
        await websocket.accept(subprotocol=selected_subprotocol(websocket))
        await close_for(websocket, exc)
        return
    try:
        await websocket.accept(subprotocol=selected_subprotocol(websocket))
        await websocket.send_text(RESYNC)
        await relay(websocket, subscriber, _native_frame, identity=identity)
    finally:
        service.unsubscribe(subscriber)


def _native_frame(body: bytes) -> str:
    return body.decode()


routes.append(WebSocketRoute("/api/v1/sync/{collection}/stream", stream))
