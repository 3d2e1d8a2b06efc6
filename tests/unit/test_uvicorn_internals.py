"""syncd/web/draining.py reads uvicorn internals; pyproject.toml pins uvicorn to the versions the
tests ran on. This names every internal it relies on, so that moving the pin fails here, in a
second, instead of as a hung websocket or a silently slower stream in the integration tests."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from syncd.web import draining


async def _noop_app(scope: object, receive: object, send: object) -> None:
    return None


def _config() -> Config:
    config = Config(app=_noop_app)
    config.load()
    return config


def test_the_installed_uvicorn_is_the_pinned_one() -> None:
    major, minor = (int(part) for part in version("uvicorn").split(".")[:2])
    assert (major, minor) == (0, 55), "re-run the stream and websocket tests, then move the pin"


def test_draining_uses_uvicorns_own_protocols() -> None:
    assert draining.PROTOCOL.endswith(":DrainingWebSocketProtocol")
    assert draining.HTTP_PROTOCOL.endswith(":RawBodyHttpProtocol")


async def test_websocket_protocol_internals_exist() -> None:
    protocol = WebSocketsSansIOProtocol(config=_config(), server_state=ServerState(), app_state={})
    for attribute in ("handshake_complete", "close_sent", "disconnected", "initial_response",
                      "writable", "frames", "conn", "loop"):
        assert hasattr(protocol, attribute), attribute
    for method in ("handle_connect", "shutdown", "send_receive_event_to_app"):
        assert callable(getattr(WebSocketsSansIOProtocol, method)), method


async def test_http_protocol_internals_exist() -> None:
    protocol = HttpToolsProtocol(config=_config(), server_state=ServerState(), app_state={})
    assert hasattr(protocol, "scope") or "self.scope" in inspect.getsource(HttpToolsProtocol)
    assert callable(HttpToolsProtocol.on_headers_complete)
    cycle_source = inspect.getsource(RequestResponseCycle)
    for attribute in ("response_started", "response_complete", "chunked_encoding",
                      "disconnected", "transport", "flow"):
        assert f"self.{attribute} =" in cycle_source, attribute
    flow_source = inspect.getsource(FlowControl)
    assert "self.write_paused =" in flow_source and callable(FlowControl.drain)
