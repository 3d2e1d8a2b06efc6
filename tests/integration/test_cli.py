"""The real ``syncd`` command, run as subprocesses: help, the embedded default, an external
database that must be migrated first, and ``collections add`` refusing what it cannot serve."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import psutil  # type: ignore[import-untyped]
import pytest

from syncd import __version__
from syncd.db import migrate
from syncd.db.urls import asyncpg_dsn
from tests.support import REPO, SyncdProcess, free_port

TODOS_SCHEMA = REPO / "examples" / "todos.schema.json"
COMPOSITE_SCHEMA: dict[str, Any] = {
    "title": "notes",
    "version": 0,
    "primaryKey": {"key": "id", "fields": ["owner", "slug"], "separator": "|"},
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 200},
        "owner": {"type": "string", "maxLength": 100},
        "slug": {"type": "string", "maxLength": 99},
        "text": {"type": "string"},
    },
    "required": ["id", "owner", "slug"],
}
# Bounds: a command that is refused must say so quickly; a server must stop soon after SIGTERM
# (uvicorn's graceful shutdown is capped at 10 s).
COMMAND_TIMEOUT = 60.0
REFUSAL_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def _env(**settings: str) -> dict[str, str]:
    """The test's environment without any SYNCD_* variable (SYNCD_DATABASE_URL and
    SYNCD_TEST_DATABASE_URL included), plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def _syncd(
    *args: str | Path, env: dict[str, str], timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *map(str, args)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    """A clear refusal: exit code 2, a message on stderr, no traceback."""
    assert result.returncode == 2, f"{result.args}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip(), "no message on stderr"
    return result.stderr


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM; the server must shut down gracefully and exit 0 within STOP_TIMEOUT."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"syncd serve ignored SIGTERM for {STOP_TIMEOUT}s:\n{self.log()}")
        assert code == 0, f"syncd serve exited {code} after SIGTERM:\n{self.log()}"


@contextmanager
def serving(env: dict[str, str], log_dir: Path) -> Iterator[Served]:
    """``syncd serve`` on a free loopback port, ready; killed (by PID) if still running after."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "syncd", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"syncd serve exited {process.returncode}:\n{served.log()}")
            try:
                if httpx.get(served.url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"syncd serve not ready in {READY_TIMEOUT}s:\n{served.log()}")
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _postmasters(data_dir: Path) -> list[psutil.Process]:
    """Running PostgreSQL servers whose command line names this data directory."""
    pgdata = str((data_dir / "pgdata").resolve())
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(pgdata in a for a in cmdline):
            found.append(proc)
    return found


def _assert_embedded_stopped(data_dir: Path) -> None:
    deadline = time.monotonic() + 10.0
    while _postmasters(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _postmasters(data_dir)
    assert not left, f"embedded PostgreSQL still running: {[p.pid for p in left]}"
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    """A fresh SYNCD_DATA_DIR (short path: PostgreSQL's Unix socket lives in it). Afterwards any
    PostgreSQL still running on it (only after a failure) is stopped by its PID."""
    path = Path(tempfile.mkdtemp(prefix="syncd-cli-"))
    try:
        yield path
    finally:
        for proc in _postmasters(path):
            proc.terminate()
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()
        shutil.rmtree(path, ignore_errors=True)


def _collections(url: str) -> list[tuple[str, str, int]]:
    async def fetch() -> list[tuple[str, str, int]]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch(
                "SELECT name, primary_key, schema_version FROM syncd_collections ORDER BY name"
            )
            return [(r["name"], r["primary_key"], r["schema_version"]) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _write_json(path: Path, value: Any) -> Path:
    path.write_bytes(orjson.dumps(value))
    return path


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["migrate"], ["collections"], ["collections", "add"], ["collections", "list"],
     ["collections", "show"], ["collections", "remove"]],
    ids=lambda c: " ".join(c) or "syncd",
)
def test_help(command: list[str], tmp_path: Path) -> None:
    data_dir = tmp_path / "never-created"
    result = _syncd(*command, "--help", env=_env(SYNCD_DATA_DIR=str(data_dir)))
    out = _ok(result)
    assert out.startswith(f"usage: {' '.join(['syncd', *command])}")
    if not command:
        for sub in ("serve", "migrate", "collections"):
            assert sub in out
    # Help needs no database: nothing was started or created.
    assert not data_dir.exists()


# --- settings -----------------------------------------------------------------------------------


def test_serve_refuses_a_misspelled_setting_in_one_line(tmp_path: Path) -> None:
    """SYNCD_AUTHMODE=jwt once served with no authentication at all."""
    data_dir = tmp_path / "never-created"
    # A database that is never there: were the variable ignored, serve would fail on it
    # rather than start anything (an embedded PostgreSQL) that could outlive the test.
    env = _env(SYNCD_AUTHMODE="jwt", SYNCD_DATA_DIR=str(data_dir),
               SYNCD_DATABASE_URL=f"postgresql://127.0.0.1:{free_port()}/none")
    result = _syncd("serve", "--host", "127.0.0.1", "--port", str(free_port()), env=env,
                    timeout=REFUSAL_TIMEOUT)
    stderr = _refused(result)
    assert stderr.startswith("syncd: unknown setting SYNCD_AUTHMODE (did you mean "
                             "SYNCD_AUTH_MODE?)"), stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not data_dir.exists()  # refused before anything started


@pytest.mark.postgres
def test_serve_logs_the_authentication_in_force_without_secrets(
    migrated_url: str, tmp_path: Path
) -> None:
    env = _env(SYNCD_DATABASE_URL=migrated_url, SYNCD_AUTH_MODE="jwt",
               SYNCD_JWT_ALGORITHMS="HS256", SYNCD_JWT_SECRET="not-in-the-log-0123456789",
               SYNCD_JWT_ISSUER="https://id.example", SYNCD_JWT_AUDIENCE="syncd")
    with serving(env, tmp_path) as served:
        served.stop()
    lines = [line for line in served.log().splitlines() if "authentication:" in line]
    assert len(lines) == 1, served.log()
    assert lines[0].endswith(
        "INFO syncd authentication: jwt, algorithms HS256, issuer https://id.example, "
        "audience syncd, keys from the shared secret SYNCD_JWT_SECRET")
    assert "not-in-the-log" not in served.log()


# --- the embedded default -----------------------------------------------------------------------


def test_version() -> None:
    assert _ok(_syncd("--version", env=_env())).strip() == f"syncd {__version__}"


@pytest.mark.postgres
def test_embedded_default_is_shared_persists_and_stops(data_dir: Path, tmp_path: Path) -> None:
    env = _env(SYNCD_DATA_DIR=str(data_dir))

    # A command on a data directory with no database creates one only when asked to.
    result = _syncd("collections", "add", "todos", "--schema", TODOS_SCHEMA, "--init", env=env)
    assert "added collection 'todos'" in _ok(result)
    assert result.stderr == f"syncd: database: the embedded PostgreSQL in {data_dir} " \
                            "(SYNCD_DATA_DIR)\n"
    # The command was the server's only holder: it stopped it on exit.
    _assert_embedded_stopped(data_dir)

    docs = [
        {"id": f"t{i}", "title": f"todo {i}", "done": i % 2 == 0, "_deleted": False}
        for i in range(3)
    ]
    with serving(env, tmp_path) as served:
        # Other commands join the running server's PostgreSQL and leave it running on exit.
        composite = _write_json(tmp_path / "notes.json", COMPOSITE_SCHEMA)
        out = _ok(_syncd("collections", "add", "notes", "--schema", composite, env=env))
        assert "added collection 'notes' (primary key 'id', schema version 0)" in out
        listed = _ok(_syncd("collections", "list", env=env)).splitlines()
        assert listed[0].split() == ["NAME", "PRIMARY", "KEY", "VERSION"]
        assert [line.split() for line in listed[1:]] == [["notes", "id", "0"], ["todos", "id", "0"]]

        with httpx.Client(base_url=served.url, timeout=30.0) as http:
            pushed = http.post("/api/v1/sync/todos", json=[{"newDocumentState": d} for d in docs])
            assert pushed.status_code == 200, pushed.text
            assert pushed.json() == []
            pulled = http.get("/api/v1/sync/todos")
            assert pulled.status_code == 200, pulled.text
            assert sorted(pulled.json()["documents"], key=lambda d: d["id"]) == docs
        served.stop()
    _assert_embedded_stopped(data_dir)

    with serving(env, tmp_path) as served:
        pulled = httpx.get(served.url + "/api/v1/sync/todos", timeout=30.0)
        assert pulled.status_code == 200, pulled.text
        assert sorted(pulled.json()["documents"], key=lambda d: d["id"]) == docs
        served.stop()
    _assert_embedded_stopped(data_dir)


# --- an external database -----------------------------------------------------------------------


@pytest.mark.postgres
def test_external_database_must_be_migrated_first(unmigrated_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    env = _env(SYNCD_DATABASE_URL=unmigrated_url, SYNCD_DATA_DIR=str(data_dir))
    port = str(free_port())

    def refused(*args: str) -> None:
        started = time.monotonic()
        message = _refused(_syncd(*args, env=env, timeout=REFUSAL_TIMEOUT))
        assert "syncd migrate" in message
        assert time.monotonic() - started < REFUSAL_TIMEOUT

    refused("serve", "--host", "127.0.0.1", "--port", port)
    refused("collections", "list")
    refused("collections", "add", "todos", "--schema", str(TODOS_SCHEMA))

    out = _ok(_syncd("migrate", env=env))
    assert f"database at revision {migrate.head_revision()}" in out
    with serving(env, tmp_path) as served:
        assert httpx.get(served.url + "/healthz", timeout=10.0).status_code == 200
        served.stop()

    # A database whose syncd schema was taken back down is refused again.
    migrate.downgrade(unmigrated_url, "base")
    refused("serve", "--host", "127.0.0.1", "--port", port)
    refused("collections", "list")

    # With SYNCD_DATABASE_URL no embedded PostgreSQL was ever started.
    assert not data_dir.exists()


# --- collections add refusing what it cannot serve ----------------------------------------------


def _bad_schema(tmp_path: Path, case: str) -> Path:
    schema: dict[str, Any] = orjson.loads(TODOS_SCHEMA.read_bytes())
    if case == "missing file":
        return tmp_path / "does-not-exist.json"
    if case == "not JSON":
        path = tmp_path / "broken.json"
        path.write_text('{"version": 0, "primaryKey": ')
        return path
    if case == "no primaryKey":
        del schema["primaryKey"]
    elif case == "attachments":
        schema["attachments"] = {"encrypted": False}
    elif case == "key maxLength above the limit":
        schema["properties"]["id"]["maxLength"] = 4096
    return _write_json(tmp_path / "schema.json", schema)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "cannot read"),
        ("not JSON", "is not JSON"),
        ("no primaryKey", "primaryKey"),
        ("attachments", "attachments are not supported"),
        ("key maxLength above the limit", "syncd stores ids of at most 2048 bytes"),
    ],
)
def test_collections_add_refuses_unservable_schema(
    case: str, message: str, migrated_url: str, tmp_path: Path
) -> None:
    schema = _bad_schema(tmp_path, case)
    env = _env(SYNCD_DATABASE_URL=migrated_url)
    stderr = _refused(_syncd("collections", "add", "todos", "--schema", schema, env=env))
    assert stderr.startswith("syncd: ")
    assert message in stderr
    if case in ("missing file", "not JSON"):
        assert str(schema) in stderr
    assert _collections(migrated_url) == []


@pytest.mark.postgres
def test_collections_add_warns_when_the_key_has_no_max_length(
    migrated_url: str, tmp_path: Path
) -> None:
    schema: dict[str, Any] = orjson.loads(TODOS_SCHEMA.read_bytes())
    del schema["properties"]["id"]["maxLength"]
    path = _write_json(tmp_path / "unbounded.json", schema)
    result = _syncd("collections", "add", "todos", "--schema", path,
                    env=_env(SYNCD_DATABASE_URL=migrated_url))
    assert "added collection 'todos'" in _ok(result)
    warnings = _said(result.stderr)
    assert len(warnings) == 1
    assert warnings[0].startswith("syncd: warning: the primary key 'id' has no maxLength")
    assert "2048 bytes" in warnings[0]
    assert _collections(migrated_url) == [("todos", "id", 0)]


@pytest.mark.postgres
def test_collections_add_refuses_a_lower_version(migrated_url: str, tmp_path: Path) -> None:
    env = _env(SYNCD_DATABASE_URL=migrated_url)
    v1 = _write_json(
        tmp_path / "todos-v1.json", {**orjson.loads(TODOS_SCHEMA.read_bytes()), "version": 1}
    )
    assert "added collection 'todos'" in _ok(
        _syncd("collections", "add", "todos", "--schema", v1, env=env)
    )
    # The same schema again changes nothing ...
    assert "unchanged collection 'todos'" in _ok(
        _syncd("collections", "add", "todos", "--schema", v1, env=env)
    )
    # ... a lower one is refused, and the collection stays where it was.
    stderr = _refused(_syncd("collections", "add", "todos", "--schema", TODOS_SCHEMA, env=env))
    assert "refusing to go back to version 0" in stderr
    assert _collections(migrated_url) == [("todos", "id", 1)]
    listed = _ok(_syncd("collections", "list", env=env)).splitlines()
    assert listed[1].split() == ["todos", "id", "1"]


# --- one database for the server and the commands -----------------------------------------------


@pytest.mark.postgres
def test_commands_never_create_a_second_embedded_database(tmp_path: Path) -> None:
    """The README's walk-through (`syncd serve`, then `syncd collections add` in the same
    folder) works; the same command run from another folder refuses instead of silently
    creating an empty database there that the server never sees."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    env = _env()  # no SYNCD_DATA_DIR: ./.syncd of the folder the command runs in

    def syncd_in(folder: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "syncd", *map(str, args)], env=env,
                              cwd=folder, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, check=False)

    # Before any server ran here, there is no database to use: refused, nothing created.
    stderr = _refused(syncd_in(project, "collections", "list"))
    assert stderr.count("\n") == 1
    assert f"no syncd database in {project / '.syncd'}" in stderr
    for hint in ("SYNCD_DATA_DIR", "SYNCD_DATABASE_URL", "--init", "syncd serve"):
        assert hint in stderr
    assert not (project / ".syncd").exists()

    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "syncd", "serve", "--port", str(port)],
            env=env, cwd=project, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", server, tmp_path / "serve.log")
        added = syncd_in(project, "collections", "add", "todos", "--schema", TODOS_SCHEMA)
        assert "added collection 'todos'" in _ok(added)
        assert f"the embedded PostgreSQL in {project / '.syncd'}" in added.stderr

        stray = syncd_in(elsewhere, "collections", "add", "todos", "--schema", TODOS_SCHEMA)
        assert f"no syncd database in {elsewhere / '.syncd'}" in _refused(stray)
        assert not (elsewhere / ".syncd").exists()

        pulled = httpx.get(f"http://127.0.0.1:{port}/api/v1/sync/todos", timeout=30.0)
        assert pulled.status_code == 200, pulled.text
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    _assert_embedded_stopped(project / ".syncd")


@pytest.mark.postgres
def test_commands_name_the_external_database_without_its_password(migrated_url: str) -> None:
    name = migrated_url.split("?")[0].rsplit("/", 1)[1]
    with_password = migrated_url.replace("://postgres@", "://postgres:s3cret@", 1).replace(
        "://postgres:@", "://postgres:s3cret@", 1)
    result = _syncd("collections", "list", env=_env(SYNCD_DATABASE_URL=with_password))
    _ok(result)
    assert "s3cret" not in result.stderr + result.stdout
    assert result.stderr.startswith("syncd: database: postgres@")
    assert f"/{name} (SYNCD_DATABASE_URL)" in result.stderr


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"syncd serve exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"syncd serve not ready in {READY_TIMEOUT}s:\n{log.read_text()}")


@pytest.mark.postgres
def test_collections_add_refuses_another_schema_under_the_same_version(
    migrated_url: str, tmp_path: Path
) -> None:
    env = _env(SYNCD_DATABASE_URL=migrated_url)
    v1: dict[str, Any] = {**orjson.loads(TODOS_SCHEMA.read_bytes()), "version": 1}
    v1_file = _write_json(tmp_path / "todos-v1.json", v1)
    _ok(_syncd("collections", "add", "todos", "--schema", v1_file, env=env))
    changed = {**v1, "properties": {**v1["properties"], "due": {"type": "string"}}}
    changed_file = _write_json(tmp_path / "todos-v1-changed.json", changed)

    stderr = _refused(_syncd("collections", "add", "todos", "--schema", changed_file, env=env))
    assert "already registered at schema version 1 with a different schema" in stderr
    assert 'raise "version"' in stderr
    assert len(_said(stderr)) == 1
    assert "due" not in _ok(_syncd("collections", "show", "todos", env=env))

    # Another access rule under the same schema is an update; the same one again is not.
    rule = _write_json(tmp_path / "access.json", {"read": {"scope": ["todos:read"]}})
    assert "updated collection 'todos'" in _ok(
        _syncd("collections", "add", "todos", "--schema", v1_file, "--access", rule, env=env)
    )
    assert "unchanged collection 'todos'" in _ok(
        _syncd("collections", "add", "todos", "--schema", v1_file, "--access", rule, env=env)
    )
    # The change registered under a new version is an update.
    v2_file = _write_json(tmp_path / "todos-v2.json", {**changed, "version": 2})
    assert "updated collection 'todos' (primary key 'id', schema version 2)" in _ok(
        _syncd("collections", "add", "todos", "--schema", v2_file, env=env)
    )
    assert _collections(migrated_url) == [("todos", "id", 2)]


# Names no client can reach in a URL path segment (or that RxDB could never name a collection).
UNREACHABLE_NAMES = [
    "bad name/../x", "a/b", "with space", "tab\there", "..", "a..b", "50%off", "-todos",
    ".todos", "x" * 129, "caf\u00e9", "",
]
# What RxDB accepts as collection names (15: ^[a-z][_$a-z0-9-]*$, 17 also upper case), and more.
REACHABLE_NAMES = ["todos", "my-todos_v2$x", "humanCards", "Todos.Archive", "2024_notes"]


@pytest.mark.postgres
def test_collections_add_refuses_names_no_url_can_reach(migrated_url: str) -> None:
    env = _env(SYNCD_DATABASE_URL=migrated_url)
    for name in UNREACHABLE_NAMES:
        stderr = _refused(
            _syncd("collections", "add", "--schema", TODOS_SCHEMA, "--", name, env=env)
        )
        assert "letters, digits, '_', '$', '-' and '.'" in stderr, (name, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr
    assert _collections(migrated_url) == []


@pytest.mark.postgres
def test_registered_names_are_reachable_on_every_way_in(migrated_url: str) -> None:
    env = _env(SYNCD_DATABASE_URL=migrated_url)
    for name in REACHABLE_NAMES:
        assert f"added collection {name!r}" in _ok(
            _syncd("collections", "add", name, "--schema", TODOS_SCHEMA, env=env)
        )
    server = SyncdProcess(migrated_url)
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            for name in REACHABLE_NAMES:
                doc = {"id": "t1", "title": name, "done": False, "_deleted": False}
                segment = quote(name, safe="")  # as clients/js encodes it
                pushed = http.post(f"/api/v1/sync/{segment}", json=[{"newDocumentState": doc}])
                assert pushed.status_code == 200, (name, pushed.text)
                pulled = http.get(f"/api/v1/sync/{name}")  # and as a hand-written URL
                assert pulled.status_code == 200, (name, pulled.text)
                assert pulled.json()["documents"] == [doc]
                rxdb = http.get(f"/rxdb/{segment}/0/pull")
                assert rxdb.status_code == 200, (name, rxdb.text)
                assert rxdb.json()["documents"] == [doc]
    finally:
        server.stop()


async def _insert_documents(url: str, collection: str, live: int, tombstones: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for i in range(live + tombstones):
            deleted = i >= live
            await conn.execute(
                "INSERT INTO syncd_documents (collection_id, id, data) "
                "SELECT id, $2, $3::jsonb FROM syncd_collections WHERE name = $1",
                collection, f"d{i}",
                orjson.dumps({"id": f"d{i}", "title": "x", "_deleted": deleted}).decode(),
            )
    finally:
        await conn.close()


async def _document_count(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT c.name, count(*) AS n FROM syncd_documents d "
            "JOIN syncd_collections c ON c.id = d.collection_id GROUP BY c.name"
        )
        orphans = await conn.fetchval(
            "SELECT count(*) FROM syncd_documents d WHERE NOT EXISTS "
            "(SELECT 1 FROM syncd_collections c WHERE c.id = d.collection_id)"
        )
        assert orphans == 0
        return {r["name"]: r["n"] for r in rows}
    finally:
        await conn.close()


@pytest.mark.postgres
def test_collections_show_and_remove(migrated_url: str, tmp_path: Path) -> None:
    env = _env(SYNCD_DATABASE_URL=migrated_url)
    rule: dict[str, Any] = {"partition_claim": "sub", "read": {"scope": ["todos:read"]}}
    rule_file = _write_json(tmp_path / "access.json", rule)
    _ok(_syncd("collections", "add", "todos", "--schema", TODOS_SCHEMA, "--access", rule_file,
               env=env))
    _ok(_syncd("collections", "add", "notes", "--schema",
               _write_json(tmp_path / "notes.json", COMPOSITE_SCHEMA), env=env))
    asyncio.run(_insert_documents(migrated_url, "todos", live=3, tombstones=1))
    asyncio.run(_insert_documents(migrated_url, "notes", live=2, tombstones=0))

    shown = _ok(_syncd("collections", "show", "todos", env=env))
    lines = shown.splitlines()
    assert lines[:3] == ["collection      todos", "primary key     id", "schema version  0"]
    assert lines[3].startswith("access rule     ")
    assert orjson.loads(lines[3].removeprefix("access rule")) == rule
    assert "\ndocuments       3\n" in shown
    assert "\ntombstones      1 " in shown
    schema_text = shown.split("\nschema:\n", 1)[1]
    assert orjson.loads(schema_text) == orjson.loads(TODOS_SCHEMA.read_bytes())
    shown_notes = _ok(_syncd("collections", "show", "notes", env=env))
    assert "access rule     none (shared by every authenticated caller)" in shown_notes
    assert "\ndocuments       2\n" in shown_notes

    stderr = _refused(_syncd("collections", "show", "nope", env=env))
    assert "there is no collection 'nope'" in stderr

    # Without --yes: refused in one line that says what would go; nothing is removed.
    stderr = _refused(_syncd("collections", "remove", "todos", env=env))
    assert "\n".join(_said(stderr)) == (
        "syncd: removing collection 'todos' deletes its 3 document(s) and 1 tombstone(s) for "
        "good; run `syncd collections remove todos --yes` to do it"
    )
    assert _document_count_sync(migrated_url) == {"todos": 4, "notes": 2}

    out = _ok(_syncd("collections", "remove", "todos", "--yes", env=env))
    assert out.strip() == "removed collection 'todos' and its 3 document(s) and 1 tombstone(s)"
    assert _collections(migrated_url) == [("notes", "id", 0)]
    assert _document_count_sync(migrated_url) == {"notes": 2}
    assert "there is no collection 'todos'" in _refused(
        _syncd("collections", "remove", "todos", "--yes", env=env)
    )
    # The name can be registered again, empty.
    _ok(_syncd("collections", "add", "todos", "--schema", TODOS_SCHEMA, env=env))
    assert "\ndocuments       0\n" in _ok(_syncd("collections", "show", "todos", env=env))


def _document_count_sync(url: str) -> dict[str, int]:
    return asyncio.run(_document_count(url))


@pytest.mark.postgres
def test_removing_a_collection_a_server_has_cached(migrated_url: str) -> None:
    """A push into a collection removed while a server still trusts its cached definition is a
    404 unknown_collection, not a 500 (the documents' foreign key refuses the rows)."""
    env = _env(SYNCD_DATABASE_URL=migrated_url)
    _ok(_syncd("collections", "add", "todos", "--schema", TODOS_SCHEMA, env=env))
    server = SyncdProcess(migrated_url, env={"SYNCD_COLLECTION_CACHE_SECONDS": "300"})
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            doc = {"id": "t1", "title": "x", "done": False, "_deleted": False}
            pushed = http.post("/api/v1/sync/todos", json=[{"newDocumentState": doc}])
            assert pushed.status_code == 200, pushed.text  # the definition is cached now
            _ok(_syncd("collections", "remove", "todos", "--yes", env=env))
            again = http.post("/api/v1/sync/todos", json=[{"newDocumentState": doc}])
            assert again.status_code == 404, again.text
            assert again.json()["error"]["code"] == "unknown_collection"
            # ... and the node forgot it: the next request is refused without a write attempt.
            assert http.get("/api/v1/sync/todos").status_code == 404
    finally:
        server.stop()
    assert "internal_error" not in server.log() and "Traceback" not in server.log()


def _said(stderr: str) -> list[str]:
    """What a command said on stderr besides the line naming its database (every command
    prints that one first)."""
    return [line for line in stderr.strip().splitlines()
            if not line.startswith("syncd: database: ")]
