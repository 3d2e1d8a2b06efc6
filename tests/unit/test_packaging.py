"""`pip install .` (not editable) must ship every package of syncd: the README's serve command
installs that way, while the test command installs editable and would not notice."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_syncd_package_is_listed_for_setuptools() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "syncd").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    mapped = config["package-dir"]
    assert mapped["syncd.migrations"] == "migrations"
    assert (REPO / "migrations" / "versions" / "__init__.py").exists()


def test_the_admin_page_files_are_package_data() -> None:
    """The admin page is served from files in the package: a wheel without them has no page."""
    import fnmatch

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["syncd.admin"]
    static = REPO / "syncd" / "admin" / "static"
    shipped = [p for p in static.iterdir()
               if any(fnmatch.fnmatch(str(p.relative_to(static.parent)), pat) for pat in patterns)]
    assert {p.name for p in shipped} == {"index.html", "admin.js", "admin.css"}
