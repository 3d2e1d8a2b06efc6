"""Run the real ``syncd`` command as another, unprivileged user id (the tests run as root in CI).

``setpriv`` (util-linux) switches uid and gid. The test's own interpreter may live where that
user cannot go (a pyenv under /root), so another Python of the same version that it can run is
used then, with this environment's site-packages added (same ABI: the compiled wheels load).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig

# No entry in /etc/passwd: what `docker run --user 12345` and OpenShift give a container.
NO_PASSWD_UID = 12345
_LAUNCH = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); "
    "from syncd.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def _candidates() -> list[str]:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = [sys.executable, shutil.which(f"python{version}") or "",
             f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    return [path for path in dict.fromkeys(found) if path and os.path.exists(path)]


def as_user(uid: int, gid: int | None = None) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}",
            "--clear-groups"]


@functools.cache
def syncd_command(uid: int) -> list[str] | None:
    """A command line that runs ``syncd`` as ``uid``; None where this machine cannot."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    site = sysconfig.get_paths()["purelib"]
    for python in _candidates():
        command = [*as_user(uid), python, "-c", _LAUNCH, site]
        probe = subprocess.run([*command, "--version"], capture_output=True, text=True,
                               timeout=60, check=False, cwd="/")
        if probe.returncode == 0:
            return command
    return None
