"""What is checked before syncd starts anything, and how start-up failures are reported.

A failure of the environment (a port in use, a data directory syncd cannot write, a database
that refuses or never answers) ends ``syncd`` with one line on stderr that names the setting or
flag to change: a ``StartupError``. Tracebacks are for bugs.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit

from syncd.config import Settings


class StartupError(Exception):
    """syncd cannot start as configured; the message is one line that says what to change."""

    def __init__(self, message: str) -> None:
        # One line, whatever the underlying error text carried (PostgreSQL's DETAIL/HINT lines).
        super().__init__(" ".join(message.split()))


def check_port(host: str, port: int) -> None:
    """Bind (and release) ``host:port`` the way uvicorn will, before the database is started,
    so that a port in use is reported in seconds rather than after PostgreSQL came up."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot bind {host!r}: {exc.strerror}; give an address of this machine with "
            "--host or SYNCD_HOST (e.g. 127.0.0.1 or 0.0.0.0)"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # uvicorn sets SO_REUSEADDR too: a port in TIME_WAIT is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise StartupError(_bind_failure(host, port, exc)) from None


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use (another syncd or another server?); "
                "stop it or choose another port with --port or SYNCD_PORT")
    if exc.errno == errno.EACCES:
        return (f"not allowed to bind port {port} on {host} (ports below 1024 need privileges); "
                "choose a port of 1024 or more with --port or SYNCD_PORT")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{host} is not an address of this machine; give one with --host or "
                "SYNCD_HOST (e.g. 127.0.0.1, or 0.0.0.0 for every interface)")
    return (f"cannot bind {host}:{port}: {exc.strerror}; check --host/SYNCD_HOST and "
            "--port/SYNCD_PORT")


def check_data_dir(data_dir: Path) -> None:
    """Refuse a SYNCD_DATA_DIR the embedded PostgreSQL could not use, before touching it."""
    path = data_dir.absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be made: {existing} is a file"
        raise StartupError(f"SYNCD_DATA_DIR {path} {where}, not a directory; point SYNCD_DATA_DIR "
                           "at a directory (it is created when missing)")
    uid = os.geteuid()
    if not os.access(existing, os.W_OK | os.X_OK):
        owner = existing.stat().st_uid
        what = "" if existing == path else f" ({existing}, where it would be created)"
        raise StartupError(
            f"SYNCD_DATA_DIR {path}{what} is not writable by user id {uid} (it belongs to user "
            f"id {owner}); make it writable (e.g. chown {uid} {existing}) or point "
            "SYNCD_DATA_DIR at a directory that is"
        )
    pgdata = path / "pgdata"
    if uid != 0 and pgdata.is_dir() and pgdata.stat().st_uid != uid:
        owner = pgdata.stat().st_uid
        raise StartupError(
            f"the embedded PostgreSQL's data in {pgdata} belongs to user id {owner}, and "
            f"PostgreSQL runs only as the owner of its data; run syncd as user id {owner}, "
            f"or give it to this user (chown -R {uid} {path}), or set another SYNCD_DATA_DIR"
        )


def no_database_here(data_dir: Path, *, explicit: bool) -> StartupError:
    """A one-shot command found no embedded database where it looked; creating an empty one
    there would only hide that it is not the one the server uses."""
    setting = "SYNCD_DATA_DIR" if explicit else "SYNCD_DATA_DIR unset: ./.syncd in this folder"
    return StartupError(
        f"no syncd database in {data_dir.absolute()} ({setting}); run the command in the folder "
        "where `syncd serve` runs, or set SYNCD_DATA_DIR to its data directory or "
        "SYNCD_DATABASE_URL to its PostgreSQL; --init creates a new empty database here"
    )


def describe_database(settings: Settings) -> str:
    """Which database a command uses, for the user: never a password."""
    if settings.database_url:
        return f"{describe_url(settings.database_url)} (SYNCD_DATABASE_URL)"
    return f"the embedded PostgreSQL in {settings.data_dir.absolute()} (SYNCD_DATA_DIR)"


def describe_url(url: str) -> str:
    """``user@host:port/database`` of a PostgreSQL URL, without its password."""
    parts = urlsplit(url)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    host = parts.hostname or unquote(query.get("host", "")) or "localhost"
    try:
        port: int | str = parts.port or query.get("port") or 5432
    except ValueError:  # not a number: show what was given; connecting reports the error
        port = parts.netloc.rpartition(":")[2]
    database = parts.path.lstrip("/") or parts.username or ""
    user = f"{unquote(parts.username)}@" if parts.username else ""
    return f"{user}{host}:{port}/{unquote(database)}"
