"""End to end: unmodified RxDB from npm (memory storage) replicating with a real syncd on loopback.

The scenarios are node scripts (tests/e2e/node/scenarios); each runs for every way in (WAYS) and
RxDB version (RXDB_VERSIONS) of the matrix, as one node process that exits non-zero with a
``FAIL …`` line when the scenario fails. The node side asks for what only this side can do over
stdio (`@@rpc` lines): register a fresh collection (with an access rule), restart syncd, sign a
token. The auth scenarios run against a syncd of this module in JWT mode (``jwt_syncd``), whose
JWKS is served by tests.authworld.Issuer.

The node projects are installed here when needed (``npm ci``; clients/js is built first), so the
README's single test command runs them. Only a machine without ``node`` skips them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.authworld import AUDIENCE, ISSUER, Issuer
from tests.conftest import register
from tests.support import REPO, SyncdProcess

NODE_PROJECT = Path(__file__).resolve().parent / "node"
# rxdb 15 as the package `rxdb` for rxdb-server's own require('rxdb') (node/lib/rxdb.mjs).
NODE_RXDB15_PROJECT = NODE_PROJECT.parent / "node-rxdb15"
CLIENT_JS = REPO / "clients" / "js"

# The ways in (node/lib/ways/): "native" is replicateRxCollection through clients/js,
# "rxdb-server" is rxdb-server's replicateServer against /rxdb/{collection}/{version} (it loads
# the package `rxdb` itself: with rxdb 15 it runs from node-rxdb15/), "rxdb-websocket" is
# replicateWithWebsocketServer against /rxdb/ws.
WAYS = ["native", "rxdb-server", "rxdb-websocket"]
RXDB_VERSIONS = ["17", "15"]  # rxdb 17.6.0 (package `rxdb`) and 15.39.0 (alias `rxdb15`)
WAY_VERSIONS = {"native": ["17", "15"], "rxdb-server": ["17", "15"], "rxdb-websocket": ["17", "15"]}
SCENARIOS = [
    "initial_sync_10k",
    "two_clients_converge",
    "custom_conflict_handler",
    "delete_while_offline",
    "live_latency_stream",
    "resume_from_checkpoint",
    "syncd_restart",
    "hostile_values",
    "rapid_edits_one_document",
    "auth_refresh_on_401",
    "auth_403_cancels",
    "auth_partition_isolation",
    "outdated_schema",
    "partial_move_out_in",
    "partial_filter_change",
    "partial_revocation",
    "partial_conflict_local_wins",
    "partial_revocation_named_value",
    "partial_hostile_filter_values",
]
# Scenarios that restart syncd get a syncd process of their own.
DEDICATED_SERVER = {"syncd_restart"}
# Scenarios that need credentials run against jwt_syncd and may ask for tokens.
AUTH_SERVER = {
    "auth_refresh_on_401", "auth_403_cancels", "auth_partition_isolation", "partial_revocation",
    "partial_revocation_named_value",
}
# (way, scenario) pairs a scenario does not apply to, and why (node/scenarios/auth.mjs).
_NO_WRITE_ERRORS = (
    "replicateWithWebsocketServer has no error channel for a write: syncd answers a 403 with "
    "`result: null`, which the client retries every retryTime forever (RC_PUSH_NO_AR); it can "
    "neither tell the app nor cancel"
)
NOT_FOR = {
    ("rxdb-websocket", "auth_403_cancels"): _NO_WRITE_ERRORS,
}
# Scenarios that fail because of a known syncd bug (strict: a fix makes them fail as XPASS, so
# that the mark is removed with the fix).
KNOWN_BUGS: dict[str, str] = {}
# Pending in node: not runnable yet.
PENDING: set[str] = set()
# The JWT syncd: short leeway, so that a token of a few seconds expires when the test expects.
JWT_ENV = {
    "SYNCD_AUTH_MODE": "jwt",
    "SYNCD_JWT_ALGORITHMS": "RS256",
    "SYNCD_JWT_ISSUER": ISSUER,
    "SYNCD_JWT_AUDIENCE": AUDIENCE,
    "SYNCD_JWT_LEEWAY_SECONDS": "0",
}

SCENARIO_TIMEOUT = 300.0
NPM_TIMEOUT = 600.0
RPC_PREFIX = "@@rpc "
METRIC_PREFIX = "@@metric "


def _run(command: list[str], cwd: Path, timeout: float = NPM_TIMEOUT) -> None:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` in {cwd} failed with exit code {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}",
            pytrace=False,
        )


def _npm_install(npm: str, project: Path) -> None:
    """``npm ci`` unless node_modules already matches package-lock.json (npm records that in
    node_modules/.package-lock.json); ``npm install`` when there is no lock file yet."""
    lock = project / "package-lock.json"
    installed = project / "node_modules" / ".package-lock.json"
    if not lock.exists():
        _run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts"], project)
        return
    newest_input = max(lock.stat().st_mtime, (project / "package.json").stat().st_mtime)
    if installed.exists() and installed.stat().st_mtime >= newest_input:
        return
    _run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], project)


@pytest.fixture(scope="module")
def node_project() -> Iterator[Path]:
    """The installed node project (and clients/js, built), or a skip when node is absent.

    Installing and building happen under an exclusive file lock, the tests under a shared one:
    two test sessions in one working tree never reinstall node_modules under each other's feet.
    """
    lock_path = Path(tempfile.gettempdir()) / f"syncd-e2e-{_digest(str(REPO))}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _install()
        finally:
            fcntl.flock(lock, fcntl.LOCK_SH)
        yield NODE_PROJECT


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _install() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the RxDB end-to-end tests need Node.js 20+ and npm")
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is installed but npm is not: install npm to run the RxDB tests")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"the RxDB end-to-end tests need Node.js 20 or newer, found {version.stdout}")
    _npm_install(npm, CLIENT_JS)
    if _build_is_stale(CLIENT_JS):
        _run([npm, "run", "build"], CLIENT_JS)
    _npm_install(npm, NODE_PROJECT)
    _npm_install(npm, NODE_RXDB15_PROJECT)


def _build_is_stale(project: Path) -> bool:
    """dist/ is older than a source: rebuild (only then, since a build empties dist/ first)."""
    built = project / "dist" / "index.js"
    if not built.exists():
        return True
    sources = [project / "package.json", project / "tsconfig.json"]
    sources += (project / "src").rglob("*.ts")
    return max(path.stat().st_mtime for path in sources) > built.stat().st_mtime


class NodeScenario:
    """One ``node run.mjs`` process, answering its requests until it exits."""

    def __init__(
        self, project: Path, way: str, rxdb: str, scenario: str, server: SyncdProcess,
        database_url: str, *, dedicated: bool, issuer: Issuer | None = None,
    ) -> None:
        self.server = server
        self.database_url = database_url
        self.dedicated = dedicated
        self.issuer = issuer
        self.label = f"{scenario} (way {way}, rxdb {rxdb})"
        self.output: list[str] = []
        self.metrics: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            ["node", "run.mjs", "--way", way, "--rxdb", rxdb, "--scenario", scenario,
             "--timeout", str(int(SCENARIO_TIMEOUT - 30))],
            cwd=project,
            env={**os.environ, "SYNCD_URL": server.url, "NO_COLOR": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def run(self, timeout: float = SCENARIO_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if time.monotonic() > deadline:
                self.process.kill()
                self.output.append(f"(killed: no result within {timeout:.0f} s)")
                return -1
            if line is None:
                return self.process.wait(30)
            if line.startswith(RPC_PREFIX):
                self._answer(json.loads(line[len(RPC_PREFIX):]))
                continue
            if line.startswith(METRIC_PREFIX):
                self.metrics.append(json.loads(line[len(METRIC_PREFIX):]))
            self.output.append(line)

    def _answer(self, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": request["id"]}
        try:
            reply["result"] = self._handle(request)
        except Exception as exc:  # the node side reports it as the scenario's failure
            reply["error"] = f"{type(exc).__name__}: {exc}"
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(reply) + "\n")
        self.process.stdin.flush()

    def _handle(self, request: dict[str, Any]) -> Any:
        command = request["cmd"]
        if command == "collection":
            return register(self.database_url, request["schema"], access=request.get("access"))
        if command == "token":
            if self.issuer is None:
                raise RuntimeError("token needs a scenario listed in AUTH_SERVER")
            claims = request.get("claims") or {}
            if not isinstance(claims, dict) or set(claims) & {"sub", "ttl", "scope"}:
                raise RuntimeError(f"token: claims must be an object of extra claims: {claims!r}")
            return self.issuer.token(
                request["subject"], ttl=float(request.get("ttl_seconds", 300)),
                scope=request.get("scope", "read write"), **claims,
            )
        if command == "restart_syncd":
            if not self.dedicated:
                raise RuntimeError("restart_syncd needs a scenario listed in DEDICATED_SERVER")
            port = self.server.port
            self.output.append(f"(pytest: stopping syncd on port {port})")
            self.server.stop()
            self.server = SyncdProcess(self.database_url, port=port)
            self.output.append(f"(pytest: new syncd serving on port {port})")
            return {"port": port}
        raise RuntimeError(f"unknown rpc command {command!r}")


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    world = Issuer()
    yield world
    world.close()


@pytest.fixture(scope="module")
def jwt_syncd(database_url: str, issuer: Issuer) -> Iterator[SyncdProcess]:
    """syncd checking JWTs against the issuer's JWKS (started by the first auth scenario)."""
    server = SyncdProcess(database_url, env={
        **JWT_ENV, "SYNCD_JWT_JWKS_URL": issuer.jwks.url + "/.well-known/jwks.json",
    })
    yield server
    server.stop()


@pytest.fixture()
def dedicated_syncd(database_url: str) -> Iterator[list[SyncdProcess]]:
    """Holder for the syncd processes a restarting scenario goes through; all stopped at the end."""
    servers: list[SyncdProcess] = []
    yield servers
    for server in servers:
        server.stop()


def _matrix() -> list[Any]:
    params = []
    for way in WAYS:
        for rxdb in RXDB_VERSIONS:
            if rxdb not in WAY_VERSIONS[way]:
                continue
            for scenario in SCENARIOS:
                marks = []
                if (way, scenario) in NOT_FOR:
                    reason = f"not for {way}: {NOT_FOR[way, scenario]}"
                    marks.append(pytest.mark.skip(reason=reason))
                if scenario in KNOWN_BUGS:
                    marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[scenario], strict=True))
                params.append(pytest.param(
                    way, rxdb, scenario, id=f"{way}-rxdb{rxdb}-{scenario}", marks=marks
                ))
    return params


@pytest.mark.postgres
@pytest.mark.parametrize(("way", "rxdb", "scenario"), _matrix())
def test_rxdb_client(
    request: pytest.FixtureRequest, node_project: Path, syncd: SyncdProcess, database_url: str,
    dedicated_syncd: list[SyncdProcess], way: str, rxdb: str, scenario: str,
) -> None:
    dedicated = scenario in DEDICATED_SERVER
    server = syncd
    issuer: Issuer | None = None
    if dedicated:
        server = SyncdProcess(database_url)
        dedicated_syncd.append(server)
    if scenario in AUTH_SERVER:
        server = request.getfixturevalue("jwt_syncd")
        issuer = request.getfixturevalue("issuer")
    run = NodeScenario(
        node_project, way, rxdb, scenario, server, database_url, dedicated=dedicated,
        issuer=issuer,
    )
    code = run.run()
    if run.server is not server:
        dedicated_syncd.append(run.server)
    for metric in run.metrics:
        print(f"{run.label}: {metric['name']} = {metric['value']} {metric['unit']}")
    if code != 0:
        tail = "\n".join(run.output[-200:])
        syncd_log = run.server.log()[-3000:]
        pytest.fail(
            f"{run.label} failed (exit code {code}):\n{tail}\n"
            f"--- syncd log (tail) ---\n{syncd_log}",
            pytrace=False,
        )


def test_every_node_scenario_is_in_the_matrix(node_project: Path) -> None:
    """A scenario added on the node side runs here too (or is explicitly pending)."""
    listed = subprocess.run(
        ["node", "run.mjs", "--list"], cwd=node_project, capture_output=True, text=True,
        check=True, timeout=60,
    )
    catalogue = json.loads(listed.stdout)
    names = {s["name"] for s in catalogue["scenarios"]}
    pending = {s["name"] for s in catalogue["scenarios"] if s["pending"]}
    assert names - pending == set(SCENARIOS)
    assert pending == PENDING
    assert {s["name"] for s in catalogue["scenarios"] if s["dedicatedServer"]} == DEDICATED_SERVER
    assert {s["name"] for s in catalogue["scenarios"] if s["authServer"]} == AUTH_SERVER
    not_for = {(way, s["name"]): why for s in catalogue["scenarios"]
               for way, why in s["notFor"].items()}
    assert not_for == NOT_FOR
    ways = {w["name"]: w["versions"] for w in catalogue["ways"]}
    assert ways == WAY_VERSIONS
