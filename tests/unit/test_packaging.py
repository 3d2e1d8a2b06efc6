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
