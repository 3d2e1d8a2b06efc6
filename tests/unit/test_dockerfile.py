"""The Dockerfile installs pinned versions, waits out start-up before health counts, and the
documented stop grace exceeds syncd's own drain. (Building the image needs a Docker daemon,
which the tests do not assume; these read the files the build uses.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from syncd.web.draining import DRAIN_LIMIT_SECONDS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
# syncd serve's uvicorn graceful-shutdown timeout (cli.py), which caps the drain.
SYNCD_DRAIN_SECONDS = 10


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "docker" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pins = _constraints()
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for spec in dependencies:
        requirement = Requirement(spec)
        name = requirement.name.lower()
        assert name in pins, f"docker/constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {spec}"
    assert "--constraint docker/constraints.txt" in DOCKERFILE
    assert re.search(r"apt-get install [^\n]*libnss-wrapper=\S+", DOCKERFILE)


def test_health_has_a_start_period_and_the_stop_grace_exceeds_the_drain() -> None:
    start_period = re.search(r"HEALTHCHECK .*--start-period=(\d+)s", DOCKERFILE)
    # Creating the embedded database or waiting a minute for an external one must not count.
    assert start_period and int(start_period.group(1)) > 60
    assert "STOPSIGNAL SIGTERM" in DOCKERFILE
    assert DRAIN_LIMIT_SECONDS < SYNCD_DRAIN_SECONDS
    for documented in re.findall(r"(?:-t|--stop-timeout|stop_grace_period:) (\d+)", DOCKERFILE):
        assert int(documented) > SYNCD_DRAIN_SECONDS
    assert "docker stop -t" in DOCKERFILE and "stop_grace_period" in DOCKERFILE
