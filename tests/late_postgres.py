"""A real PostgreSQL that starts answering on a loopback TCP port only when the test says so.

What compose or Kubernetes look like to syncd: the database's port refuses connections for a
while, then PostgreSQL answers there. The test's PostgreSQL (embedded on a Unix socket, or
SYNCD_TEST_DATABASE_URL) is forwarded byte for byte from a port that starts listening late.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import parse_qs, urlsplit

from tests.support import free_port


class LatePostgres:
    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        parts = urlsplit(database_url)
        self.url = f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{self.port}{parts.path}"
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        self._target: tuple[int, str | tuple[str, int]] = (
            (socket.AF_UNIX, f"{socket_dir}/.s.PGSQL.{parts.port or 5432}") if socket_dir
            else (socket.AF_INET, (parts.hostname or "127.0.0.1", parts.port or 5432))
        )
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            family, address = self._target
            upstream = socket.socket(family, socket.SOCK_STREAM)
            try:
                upstream.connect(address)
            except OSError:
                client.close()
                upstream.close()
                continue
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        for sock in [*self._sockets, *([self._listener] if self._listener else [])]:
            with contextlib.suppress(OSError):
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
