"""examples/todo-web in headless Chromium: two browser profiles, live sync, offline edits, conflict.

The example is built the way its README says (``npm ci && npm run build``; clients/js is
installed and built first, as in tests/e2e) and served from dist/ by a small static server
thread on loopback. A real syncd on another port, with the page's origin in
``SYNCD_CORS_ORIGINS``, serves a fresh database with the example's two collections. Two
Playwright browser contexts are two independent profiles (each its own IndexedDB).

Screenshots of both pages go to pytest's tmp dir; with ``UPDATE_SCREENSHOTS=1`` the
converged pair is also copied to docs/todo-web-a.png and docs/todo-web-b.png. (Not a SYNCD_*
name: syncd refuses to start with an unknown SYNCD_* variable, and it inherits the environment.)

Skipped only when Chromium is not at /usr/bin/chromium (``apt-get install chromium``; .ci/run
installs it) or node/npm are missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    sync_playwright,
)

from tests.conftest import register
from tests.e2e.test_rxdb_clients import (
    CLIENT_JS,
    _build_is_stale,
    _digest,
    _npm_install,
    _run,
)
from tests.support import REPO, PostgresServer, SyncdProcess, free_port

EXAMPLE = REPO / "examples" / "todo-web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
WAIT_MS = 20_000  # every browser-side wait
VIEWPORT: ViewportSize = {"width": 960, "height": 520}

pytestmark = pytest.mark.postgres


# --- the world: built example, static server, syncd, Chromium -----------------------------------


@pytest.fixture(scope="module")
def dist() -> Iterator[Path]:
    """examples/todo-web/dist, freshly built (under the e2e fixture's lock: clients/js too)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to build examples/todo-web (Node.js 20+)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian) to run it")
    npm = shutil.which("npm")
    assert npm is not None
    lock_path = Path(tempfile.gettempdir()) / f"syncd-e2e-{_digest(str(REPO))}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _npm_install(npm, CLIENT_JS)
            if _build_is_stale(CLIENT_JS):
                _run([npm, "run", "build"], CLIENT_JS)
            _npm_install(npm, EXAMPLE)
            _run([npm, "run", "build"], EXAMPLE, timeout=300)
        finally:
            fcntl.flock(lock, fcntl.LOCK_SH)
        yield EXAMPLE / "dist"


class StaticServer:
    """dist/ over HTTP on 127.0.0.1, in a thread (what `python3 -m http.server -d dist` does)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(dist: Path) -> Iterator[StaticServer]:
    server = StaticServer(dist)
    yield server
    server.close()


@pytest.fixture(scope="module")
def todo_syncd(postgres: PostgresServer, site: StaticServer) -> Iterator[SyncdProcess]:
    """syncd on a fresh database with the example's collections, the page's origin allowed."""
    url = postgres.create_database()
    for name in ("lists", "todos"):
        schema = json.loads((EXAMPLE / f"{name}.schema.json").read_text())
        register(url, schema, name=name)
    server = SyncdProcess(url, env={"SYNCD_CORS_ORIGINS": site.origin})
    yield server
    server.stop()
    postgres.drop_database(url)


@pytest.fixture(scope="module")
def browser(dist: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


# --- reading and driving a page ------------------------------------------------------------------

Todo = tuple[str, bool]  # (title, done), as the page shows it

_SHOWN = """() => [...document.querySelectorAll('#todos .todo')].map(
    (row) => [row.querySelector('.title').value, row.querySelector('.done').checked])"""


def shown(page: Page) -> list[Todo]:
    return [(title, done) for title, done in page.evaluate(_SHOWN)]


def wait_shown(page: Page, expected: list[Todo]) -> None:
    """Wait until the page shows exactly these todos, in this order."""
    want = [[title, done] for title, done in expected]
    try:
        page.wait_for_function(
            f"(want) => JSON.stringify(({_SHOWN})()) === JSON.stringify(want)",
            arg=want, timeout=WAIT_MS,
        )
    except Exception as exc:
        raise AssertionError(f"{page_name(page)} shows {shown(page)}, expected {expected}") from exc


def wait_live(page: Page) -> None:
    page.wait_for_selector("body[data-ready='true']", state="attached", timeout=WAIT_MS)
    page.wait_for_selector("#status[data-state='live']", timeout=WAIT_MS)


def page_name(page: Page) -> str:
    return str(page.evaluate("() => document.title")) + f" ({page.url})"


def title_input(page: Page, title: str) -> Locator:
    """The title field of the todo that shows `title` (matched on the live value)."""
    index = [t for t, _ in shown(page)].index(title)
    return page.locator("#todos .todo .title").nth(index)


def done_box(page: Page, title: str) -> Locator:
    index = [t for t, _ in shown(page)].index(title)
    return page.locator("#todos .todo .done").nth(index)


def rename(page: Page, old: str, new: str) -> None:
    field = title_input(page, old)
    field.fill(new)
    field.press("Enter")


def add_todo(page: Page, title: str) -> None:
    page.fill("#new-todo input", title)
    page.press("#new-todo input", "Enter")


def open_page(browser: Browser, url: str, name: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=VIEWPORT)  # a profile of its own: its own IndexedDB
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.on("console", lambda message: _console(name, message.type, message.text))
    page.on("pageerror", lambda error: _console(name, "pageerror", str(error)))
    page.goto(url)
    wait_live(page)
    return context, page


_LOG: list[str] = []


def _console(name: str, kind: str, text: str) -> None:
    if kind in ("error", "warning", "pageerror"):
        _LOG.append(f"{name} [{kind}] {text[:300]}")


def screenshot_pair(a: Page, b: Page, directory: Path, label: str) -> tuple[Path, Path]:
    paths = (directory / f"todo-web-a-{label}.png", directory / f"todo-web-b-{label}.png")
    a.screenshot(path=str(paths[0]))
    b.screenshot(path=str(paths[1]))
    print(f"screenshots ({label}): {paths[0]} {paths[1]}")
    return paths


# --- the test ------------------------------------------------------------------------------------


def test_two_profiles_sync_live_resolve_a_conflict_and_keep_data_over_reload(
    todo_syncd: SyncdProcess, site: StaticServer, browser: Browser, tmp_path: Path,
) -> None:
    # (todo_syncd before browser: Playwright's sync API keeps an event loop running in this
    # thread, and registering the collections runs one of its own)
    started = time.monotonic()
    url = f"{site.origin}/?syncd={quote(todo_syncd.url, safe='')}"
    context_a, a = open_page(browser, url, "A")
    context_b, b = open_page(browser, url, "B")
    try:
        _scenario(a, b, context_b, url, todo_syncd, tmp_path)
    except BaseException:
        print("\n".join(["browser console:", *_LOG[-40:]]))
        print("syncd log (tail):\n" + todo_syncd.log()[-3000:])
        with contextlib.suppress(Exception):
            screenshot_pair(a, b, tmp_path, "failure")
        raise
    finally:
        context_a.close()
        context_b.close()
    print(f"browser scenario took {time.monotonic() - started:.1f} s")


def _scenario(
    a: Page, b: Page, context_b: BrowserContext, url: str, syncd: SyncdProcess, tmp_path: Path,
) -> None:
    # A creates a list and three todos; B (the other profile) sees them live, list included.
    a.fill("#new-list input", "Groceries")
    a.press("#new-list input", "Enter")
    a.wait_for_selector("#new-todo:not([hidden])")
    for title in ("Milk", "Bread", "Apples"):
        add_todo(a, title)
    wait_shown(a, [("Milk", False), ("Bread", False), ("Apples", False)])
    seen = time.monotonic()
    wait_shown(b, [("Milk", False), ("Bread", False), ("Apples", False)])
    print(f"B saw A's todos {time.monotonic() - seen:.2f} s after A showed them")
    assert b.text_content("#list-title") == "Groceries"

    # B adds a list with a todo; A sees both. B goes back to "Groceries".
    b.fill("#new-list input", "Weekend")
    b.press("#new-list input", "Enter")
    b.wait_for_selector("#list-title:text-is('Weekend')")
    add_todo(b, "Fix the bike")
    wait_shown(b, [("Fix the bike", False)])
    a.wait_for_selector("#lists a:has-text('Weekend') .count:text-is('1')")
    b.click("#lists a:has-text('Groceries')")
    wait_shown(b, [("Milk", False), ("Bread", False), ("Apples", False)])

    # A edits; B sees the edits live.
    rename(a, "Bread", "Sourdough bread")
    done_box(a, "Apples").check()
    wait_shown(b, [("Milk", False), ("Sourdough bread", False), ("Apples", True)])

    # B goes offline. Both edit two same todos, in both orders, and each one of its own:
    # "Apples": B first, then A; "Milk": A first, then B; A adds "Eggs", B ticks "Sourdough bread".
    context_b.set_offline(True)
    b.wait_for_selector("#status[data-state='offline']")
    rename(b, "Apples", "Red apples")
    wait_shown(b, [("Milk", False), ("Sourdough bread", False), ("Red apples", True)])
    time.sleep(0.1)  # A's edits get a later updatedAt (ms)
    rename(a, "Milk", "Oat milk")
    done_box(a, "Apples").uncheck()
    rename(a, "Apples", "Green apples")
    add_todo(a, "Eggs")
    wait_shown(a, [("Oat milk", False), ("Sourdough bread", False), ("Green apples", False),
                   ("Eggs", False)])
    time.sleep(1.0)  # B really is offline: A's edits do not reach it (and B's next edit is later)
    assert shown(b) == [("Milk", False), ("Sourdough bread", False), ("Red apples", True)]
    rename(b, "Milk", "Almond milk")
    done_box(b, "Sourdough bread").check()
    wait_shown(b, [("Almond milk", False), ("Sourdough bread", True), ("Red apples", True)])
    screenshot_pair(a, b, tmp_path, "offline")

    # B comes back. syncd refuses B's stale pushes of "Milk" and "Apples" as conflicts, and the
    # example's handler keeps the newer document of each (last writer wins by updatedAt):
    # B's "Almond milk" (the default handler, master wins, would have kept A's "Oat milk") and
    # A's "Green apples" (B's rename and tick are dropped). The edits of one side only survive.
    context_b.set_offline(False)
    converged = [("Almond milk", False), ("Sourdough bread", True), ("Green apples", False),
                 ("Eggs", False)]
    wait_shown(b, converged)
    wait_shown(a, converged)
    wait_live(b)
    b.wait_for_selector("#conflicts:not([hidden])")
    resolved = {(c["kept"], c["dropped"], c["from"])
                for c in b.evaluate("() => window.todoApp.conflicts")}
    assert resolved == {
        ("Almond milk", "Oat milk", "this device"), ("Green apples", "Red apples", "the server"),
    }
    banner = b.inner_text("#conflicts")  # (the quotation marks are CSS: <q>)
    assert "kept Almond milk (newer, from this device) over Oat milk" in banner, banner
    assert "kept Green apples (newer, from the server) over Red apples" in banner, banner
    assert a.is_hidden("#conflicts"), "A pushed no stale edit: it has no conflict to resolve"

    docs = {doc["title"]: doc for doc in server_todos(syncd)}
    assert set(docs) == {"Almond milk", "Sourdough bread", "Green apples", "Eggs", "Fix the bike"}
    assert docs["Sourdough bread"]["done"] is True
    a_docs, b_docs = local_docs(a), local_docs(b)
    assert a_docs == b_docs, "the two profiles' IndexedDB documents differ"

    pair = screenshot_pair(a, b, tmp_path, "converged")
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(pair[0], REPO / "docs" / "todo-web-a.png")
        shutil.copyfile(pair[1], REPO / "docs" / "todo-web-b.png")

    # A reload keeps everything: B reopened against a syncd that does not answer shows it all
    # from IndexedDB (and says it is not live); reopened normally, it is live with the same data.
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    b.goto(url.split("?")[0] + f"?syncd={quote(dead, safe='')}")
    b.wait_for_selector("body[data-ready='true']", state="attached", timeout=WAIT_MS)
    wait_shown(b, converged)
    assert b.get_attribute("#status", "data-state") != "live"
    assert b.text_content("#list-title") == "Groceries"
    b.goto(url)
    wait_live(b)
    wait_shown(b, converged)
    a.reload()
    wait_live(a)
    wait_shown(a, converged)
    assert local_docs(a) == a_docs and local_docs(b) == b_docs

    # A deletes a todo; B sees it go. syncd keeps the deletion, stamped with its own updatedAt.
    eggs = next(doc for doc in server_todos(syncd) if doc["title"] == "Eggs")
    a.locator("#todos .todo .delete").nth(3).click()
    wait_shown(b, converged[:3])
    wait_shown(a, converged[:3])
    with httpx.Client(base_url=syncd.url, timeout=30.0) as client:
        deleted = [doc for doc in client.get("/api/v1/sync/todos?limit=100").json()["documents"]
                   if doc["id"] == eggs["id"]]
    assert deleted and deleted[0]["_deleted"] is True
    assert deleted[0]["updatedAt"] > eggs["updatedAt"]


_LOCAL_DOCS = """async () => {
    const db = window.todoApp.db;
    const out = {};
    for (const name of ['lists', 'todos']) {
        const docs = await db[name].find().exec();
        out[name] = docs.map((d) => d.toJSON()).sort((x, y) => (x.id < y.id ? -1 : 1));
    }
    return out;
}"""


def local_docs(page: Page) -> Any:
    """The page's documents in its IndexedDB (RxDB), both collections."""
    return page.evaluate(_LOCAL_DOCS)


def server_todos(syncd: SyncdProcess) -> list[dict[str, Any]]:
    """syncd's todos that are not deleted (one page: the test writes a handful)."""
    with httpx.Client(base_url=syncd.url, timeout=30.0) as client:
        answer = client.get("/api/v1/sync/todos?limit=100")
        answer.raise_for_status()
        page = answer.json()
    assert len(page["documents"]) < 100
    return [doc for doc in page["documents"] if not doc["_deleted"]]
