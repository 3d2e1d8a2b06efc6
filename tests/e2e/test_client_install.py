"""clients/js installed into an app the way clients/js/README.md says, then used against syncd.

``npm install <path>/clients/js`` links the folder, so the helper loads the RxDB in
clients/js/node_modules (its dev install), not the app's: the database and the replication then
come from two copies of RxDB and ``replicateSyncd()`` fails with RxDB's "must be overwritten by a
plugin" error (RxDBLeaderElectionPlugin). The README's install (``npm pack``, then install the
tarball) copies the package, whose peer dependencies rxdb and rxjs then resolve to the app's.

The app is a new npm project in a temporary folder with rxdb, rxjs and ws at the versions of the
e2e node project (from npm's cache when the e2e install already fetched them, else the registry).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import register
from tests.e2e.test_rxdb_clients import CLIENT_JS, NODE_PROJECT, node_project  # noqa: F401
from tests.support import REPO, SyncdProcess

APP_SCRIPT = Path(__file__).resolve().parent / "install" / "replicate_one.mjs"
SCHEMA = REPO / "examples" / "todos.schema.json"
NPM_TIMEOUT = 300.0
Done = subprocess.CompletedProcess[str]


def _run(command: list[str], cwd: Path, timeout: float = NPM_TIMEOUT) -> Done:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _ok(result: Done) -> str:
    assert result.returncode == 0, (
        f"{result.args}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def _new_app(folder: Path) -> Path:
    """An npm project with the app's own rxdb, rxjs and ws, and the replication script."""
    folder.mkdir()
    wanted = json.loads((NODE_PROJECT / "package.json").read_text())["dependencies"]
    (folder / "package.json").write_text(json.dumps({
        "name": "app", "private": True, "type": "module",
        "dependencies": {name: wanted[name] for name in ("rxdb", "rxjs", "ws")},
    }))
    _ok(_run(["npm", "install", "--prefer-offline", "--no-audit", "--no-fund",
              "--ignore-scripts"], folder))
    shutil.copy(APP_SCRIPT, folder / APP_SCRIPT.name)
    return folder


def _replicate(app: Path, server: SyncdProcess, collection: str) -> Done:
    return _run(["node", APP_SCRIPT.name, server.url, collection, str(SCHEMA)], app, timeout=120)


@pytest.mark.postgres
@pytest.mark.usefixtures("node_project")  # node ≥ 20 (else skipped), clients/js built
def test_the_documented_install_replicates_and_a_linked_folder_does_not(
    tmp_path: Path, syncd: SyncdProcess, database_url: str
) -> None:
    collection = register(database_url, json.loads(SCHEMA.read_text()))
    pushed = httpx.post(f"{syncd.url}/api/v1/sync/{collection}", timeout=30, json=[
        {"newDocumentState": {"id": "from-server", "title": "pushed with curl", "done": False}}])
    assert pushed.json() == []

    # The README's install: pack the built package, install the tarball.
    packed = _ok(_run(["npm", "pack", "--ignore-scripts", "--pack-destination", str(tmp_path)],
                      CLIENT_JS)).strip().splitlines()[-1]
    app = _new_app(tmp_path / "app")
    _ok(_run(["npm", "install", "--no-audit", "--no-fund", str(tmp_path / packed)], app))
    assert not (app / "node_modules" / "syncd-rxdb").is_symlink()
    assert "OK replicated one document each way" in _ok(_replicate(app, syncd, collection))
    documents = httpx.get(f"{syncd.url}/api/v1/sync/{collection}", timeout=30).json()["documents"]
    assert {d["id"] for d in documents} == {"from-server", "from-app"}

    # What the README used to say: a linked folder, and two copies of RxDB.
    _ok(_run(["npm", "install", "--no-audit", "--no-fund", str(CLIENT_JS)], app))
    assert (app / "node_modules" / "syncd-rxdb").is_symlink()
    linked = _replicate(app, syncd, collection)
    assert linked.returncode != 0
    assert "must be overwritten by a plugin" in linked.stderr, linked.stderr[-4000:]
