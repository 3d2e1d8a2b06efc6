"""Start-up as users and operators meet it: every environment problem ends ``syncd`` with one line
on stderr that names the setting or flag to change (exit 2, no traceback); a database that is
not up yet is waited for while the probes answer; the embedded PostgreSQL runs under a user id
that has no passwd entry. Real ``syncd`` processes, real PostgreSQL, other uids via setpriv."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cli import (
    TODOS_SCHEMA,
    _assert_embedded_stopped,
    _env,
    _postmasters,
)
from tests.late_postgres import LatePostgres
from tests.other_user import NO_PASSWD_UID, syncd_command
from tests.support import REPO, PostgresServer, free_port

# A refusal comes in seconds; a wait ends soon after SYNCD_DATABASE_WAIT_SECONDS.
REFUSAL_SECONDS = 20.0
READY_TIMEOUT = 60.0
SHORT_WAIT = 6


def _one_line_refusal(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 2 and, as the last line on stderr, one ``syncd: ...`` line naming ``names``."""
    assert result.returncode == 2, f"{result.args}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("syncd: "), result.stderr
    for name in names:
        assert name in last, f"{name!r} not in {last!r}"
    return last


def _run(command: list[str], env: dict[str, str], cwd: Path = REPO,
         timeout: float = REFUSAL_SECONDS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _syncd(*args: str) -> list[str]:
    return [sys.executable, "-m", "syncd", *args]


def _serve_args(port: int) -> list[str]:
    return ["serve", "--host", "127.0.0.1", "--port", str(port)]


class Background:
    """``syncd serve`` (or another command) running; stopped by its PID afterwards."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO):
        self.log_path = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out,
                                            stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, url: str) -> httpx.Response | None:
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            return None

    def wait_status(self, url: str, status: int, timeout: float = READY_TIMEOUT) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"exited {self.process.returncode}:\n{self.log()}")
            answer = self.get(url)
            if answer is not None and answer.status_code == status:
                return answer
            time.sleep(0.1)
        pytest.fail(f"{url} did not answer {status} in {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(10)


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A directory other users can reach (tmp_path is root's only); cleaned up by root, with
    any PostgreSQL left on it (only after a failure) stopped by PID."""
    path = Path(tempfile.mkdtemp(prefix="syncd-uid-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for proc in _postmasters(path / "data"):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(path, ignore_errors=True)


def _other_user_syncd() -> list[str]:
    command = syncd_command(NO_PASSWD_UID)
    if command is None:
        pytest.skip("needs root, setpriv and a Python the other user may run")
    return command


# --- the port ------------------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["embedded", "external that is down"])
def test_a_port_in_use_is_refused_before_the_database_is_started(
    database: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    settings = {"SYNCD_DATA_DIR": str(data_dir)}
    if database != "embedded":
        # Waited for a minute, were the port checked after the database.
        settings["SYNCD_DATABASE_URL"] = f"postgresql://syncd@127.0.0.1:{free_port()}/app"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = _run(_syncd(*_serve_args(port)), _env(**settings))
    _one_line_refusal(result, f"port {port}", "--port", "SYNCD_PORT")
    assert time.monotonic() - started < REFUSAL_SECONDS
    assert not data_dir.exists(), "the embedded PostgreSQL was started before the port check"


# --- the data directory --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["serve"], ["collections", "list", "--init"]])
def test_a_data_dir_that_is_a_file_is_refused(command: list[str], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a directory")
    args = _serve_args(free_port()) if command == ["serve"] else command
    result = _run(_syncd(*args), _env(SYNCD_DATA_DIR=str(data_dir)))
    _one_line_refusal(result, "SYNCD_DATA_DIR", str(data_dir), "is a file")


@pytest.mark.parametrize("case", ["owned by root", "read-only", "missing, parent owned by root"])
def test_a_data_dir_the_user_cannot_write_is_refused(case: str, shared_dir: Path) -> None:
    command = _other_user_syncd()
    data_dir = shared_dir / "data"
    if case == "owned by root":
        data_dir.mkdir(mode=0o755)
    elif case == "read-only":
        data_dir.mkdir()
        os.chown(data_dir, NO_PASSWD_UID, NO_PASSWD_UID)
        data_dir.chmod(0o555)
    else:
        data_dir = shared_dir / "root-owned" / "data"
        data_dir.parent.mkdir(mode=0o755)
    env = _env(SYNCD_DATA_DIR=str(data_dir), HOME="/")
    result = _run([*command, *_serve_args(free_port())], env, cwd=shared_dir)
    _one_line_refusal(result, "SYNCD_DATA_DIR", str(data_dir),
                      f"not writable by user id {NO_PASSWD_UID}")


def test_embedded_data_of_another_user_is_refused(shared_dir: Path) -> None:
    """A data directory first used as root (or as another uid), then mounted for uid 12345:
    PostgreSQL would refuse its pgdata; syncd says whose it is and what to do."""
    command = _other_user_syncd()
    data_dir = shared_dir / "data"
    (data_dir / "pgdata").mkdir(parents=True)
    os.chown(data_dir, NO_PASSWD_UID, NO_PASSWD_UID)
    env = _env(SYNCD_DATA_DIR=str(data_dir), HOME="/")
    result = _run([*command, *_serve_args(free_port())], env, cwd=shared_dir)
    _one_line_refusal(result, "belongs to user id 0", f"chown -R {NO_PASSWD_UID}",
                      "SYNCD_DATA_DIR")


# --- an arbitrary uid ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_embedded_postgres_runs_under_a_uid_without_passwd_entry(shared_dir: Path) -> None:
    """`docker run --user 12345` / OpenShift: no passwd entry, group 0, a data directory it owns.
    Serve, register a collection with a second command, push and pull, stop cleanly."""
    command = _other_user_syncd()
    with pytest.raises(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)
    data_dir = shared_dir / "data"
    data_dir.mkdir()
    os.chown(data_dir, NO_PASSWD_UID, 0)
    env = _env(SYNCD_DATA_DIR=str(data_dir), HOME="/")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Background([*command, *_serve_args(port)], env, shared_dir / "serve.log",
                        cwd=shared_dir)
    try:
        server.wait_status(url + "/readyz", 200)
        added = _run([*command, "collections", "add", "todos", "--schema", str(TODOS_SCHEMA)],
                     env, cwd=shared_dir, timeout=60)
        assert added.returncode == 0, added.stderr
        doc = {"id": "t1", "title": "as uid 12345", "done": False, "_deleted": False}
        pushed = httpx.post(url + "/api/v1/sync/todos", json=[{"newDocumentState": doc}],
                            timeout=30)
        assert pushed.status_code == 200 and pushed.json() == [], pushed.text
        assert httpx.get(url + "/api/v1/sync/todos", timeout=30).json()["documents"] == [doc]
        assert (data_dir / "pgdata").stat().st_uid == NO_PASSWD_UID
    finally:
        code = server.stop()
    assert code == 0, server.log()
    _assert_embedded_stopped(data_dir)


# --- an external database ------------------------------------------------------------------------


def test_a_database_that_never_answers_is_waited_for_then_named(tmp_path: Path) -> None:
    port = free_port()
    dead = f"postgresql://syncd:s3cret@127.0.0.1:{free_port()}/app"
    env = _env(SYNCD_DATABASE_URL=dead, SYNCD_DATABASE_WAIT_SECONDS=str(SHORT_WAIT))
    started = time.monotonic()
    server = Background(_syncd(*_serve_args(port)), env, tmp_path / "serve.log")
    try:
        # Alive, not ready: an orchestrator neither restarts it nor sends it traffic.
        healthz = server.wait_status(f"http://127.0.0.1:{port}/healthz", 200, SHORT_WAIT)
        assert healthz.json()["status"] == "ok"
        readyz = server.get(f"http://127.0.0.1:{port}/readyz")
        assert readyz is not None and readyz.status_code == 503
        assert readyz.json()["error"]["code"] == "database_unavailable"
        pull = server.get(f"http://127.0.0.1:{port}/api/v1/sync/todos")
        assert pull is not None and pull.status_code == 503
        code = server.process.wait(SHORT_WAIT + REFUSAL_SECONDS)
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    result = subprocess.CompletedProcess(server.process.args, code, "", server.log())
    last = _one_line_refusal(result, "SYNCD_DATABASE_URL", "SYNCD_DATABASE_WAIT_SECONDS",
                             "connection refused")
    assert "s3cret" not in server.log()
    assert f"within {SHORT_WAIT} s" in last
    assert SHORT_WAIT <= elapsed < SHORT_WAIT + REFUSAL_SECONDS


@pytest.mark.parametrize("command", [["collections", "list"], ["purge", "--older-than-days", "9"]])
def test_one_shot_commands_name_a_database_that_does_not_answer(command: list[str]) -> None:
    env = _env(SYNCD_DATABASE_URL=f"postgresql://syncd:s3cret@127.0.0.1:{free_port()}/app")
    result = _run(_syncd(*command), env)  # at once: a person is waiting for the answer
    _one_line_refusal(result, "SYNCD_DATABASE_URL", "syncd@127.0.0.1:", "connection refused")
    assert "s3cret" not in result.stderr


def test_sigterm_while_waiting_stops_at_once(tmp_path: Path) -> None:
    port = free_port()
    env = _env(SYNCD_DATABASE_URL=f"postgresql://syncd@127.0.0.1:{free_port()}/app")
    server = Background(_syncd(*_serve_args(port)), env, tmp_path / "serve.log")
    server.wait_status(f"http://127.0.0.1:{port}/healthz", 200)
    started = time.monotonic()
    assert server.stop() == 0, server.log()
    assert time.monotonic() - started < 5.0
    assert "Traceback" not in server.log()


@pytest.mark.postgres
def test_a_database_that_comes_up_later_is_served(
    migrated_url: str, tmp_path: Path
) -> None:
    late = LatePostgres(migrated_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Background(_syncd(*_serve_args(port)), _env(SYNCD_DATABASE_URL=late.url),
                        tmp_path / "serve.log")
    try:
        server.wait_status(url + "/readyz", 503)
        time.sleep(2.0)  # a few refused attempts, backing off
        late.start()
        server.wait_status(url + "/readyz", 200)
        assert server.get(url + "/healthz") is not None
        assert server.get(url + "/api/v1/sync/nope").status_code == 404  # type: ignore[union-attr]
    finally:
        code = server.stop()
        late.stop()
    assert code == 0, server.log()
    assert "waiting for the database at postgres@127.0.0.1" in server.log()


@pytest.mark.postgres
def test_migrate_waits_for_the_database_too(unmigrated_url: str, tmp_path: Path) -> None:
    late = LatePostgres(unmigrated_url)
    migrate = Background(_syncd("migrate"), _env(SYNCD_DATABASE_URL=late.url),
                         tmp_path / "migrate.log")
    try:
        time.sleep(2.0)
        assert migrate.process.poll() is None, migrate.log()
        late.start()
        assert migrate.process.wait(READY_TIMEOUT) == 0, migrate.log()
    finally:
        migrate.stop()
        late.stop()
    assert "database at revision" in migrate.log()


@pytest.mark.postgres
@pytest.mark.parametrize("case", ["unknown user", "no such database"])
def test_a_database_that_refuses_is_named_at_once(
    case: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    if case == "unknown user":
        url = postgres.url_for("postgres").replace("://postgres", "://nobody_syncd", 1)
        hint = "fix the user in SYNCD_DATABASE_URL"
    else:
        url = postgres.url_for("syncd_no_such_database")
        hint = "fix the database name in SYNCD_DATABASE_URL"
    env = _env(SYNCD_DATABASE_URL=url)  # the default wait is a minute: no waiting on these
    started = time.monotonic()
    for args in (_serve_args(free_port()), ["collections", "list"], ["migrate"]):
        _one_line_refusal(_run(_syncd(*args), env), "SYNCD_DATABASE_URL", hint)
    assert time.monotonic() - started < 3 * REFUSAL_SECONDS


@pytest.fixture()
def password_postgres(shared_dir: Path) -> Iterator[tuple[int, str]]:
    """A second, real PostgreSQL on a loopback port that checks passwords (scram-sha-256), as a
    production server does; (port, password). It runs as the unprivileged test uid (PostgreSQL
    refuses root), its initdb through nss_wrapper like syncd's own. Stopped afterwards."""
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR, as in embedded.py
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    from syncd.db.anyuid import nss_wrapper_library
    from tests.other_user import as_user

    library = nss_wrapper_library()
    if os.geteuid() != 0 or shutil.which("setpriv") is None or library is None:
        pytest.skip("needs root, setpriv and nss_wrapper")
    uid, password = NO_PASSWD_UID, "right-password"
    home = shared_dir / "pw"
    home.mkdir()
    (home / "passwd").write_text(f"pg:x:{uid}:{uid}:pg:{home}:/bin/false\n")
    (home / "group").write_text(f"pg:x:{uid}:\n")
    (home / "pwfile").write_text(password + "\n")
    os.chown(home, uid, uid)
    os.chown(home / "pwfile", uid, uid)
    pgdata, port = home / "pgdata", free_port()
    env = {**os.environ, "LD_PRELOAD": library, "NSS_WRAPPER_PASSWD": str(home / "passwd"),
           "NSS_WRAPPER_GROUP": str(home / "group")}

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_user(uid), str(POSTGRES_BIN_PATH / tool), "-D", str(pgdata), *args],
                       env=env, cwd=home, check=True, capture_output=True, timeout=120)

    pg("initdb", "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
       f"--pwfile={home / 'pwfile'}")
    pg("pg_ctl", "-w", "-l", str(home / "log"), "-o", f"-h 127.0.0.1 -p {port} -k {home}",
       "start")
    try:
        yield port, password
    finally:
        pg("pg_ctl", "-w", "-m", "fast", "stop")


@pytest.mark.postgres
def test_a_wrong_password_is_named_at_once(
    password_postgres: tuple[int, str], tmp_path: Path
) -> None:
    port, password = password_postgres
    wrong = f"postgresql://postgres:wrong-password@127.0.0.1:{port}/postgres"
    env = _env(SYNCD_DATABASE_URL=wrong)  # the default wait is a minute: no waiting on this
    started = time.monotonic()
    for args in (_serve_args(free_port()), ["migrate"]):
        result = _run(_syncd(*args), env)
        _one_line_refusal(result, "password authentication failed",
                          "fix the user or password in SYNCD_DATABASE_URL")
        assert "wrong-password" not in result.stderr + result.stdout
    assert time.monotonic() - started < 2 * REFUSAL_SECONDS
    # The same server with the right password works: it was the password.
    right = wrong.replace("wrong-password", password)
    migrated = _run(_syncd("migrate"), _env(SYNCD_DATABASE_URL=right), timeout=120)
    assert migrated.returncode == 0, migrated.stderr
