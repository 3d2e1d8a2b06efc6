"""Let the embedded PostgreSQL be created under a user id that has no passwd entry.

Containers often run as an arbitrary uid (``docker run --user 12345``, OpenShift). PostgreSQL's
``initdb`` looks up the effective user's name and gives up when there is none ("could not look
up effective user ID"); the server itself does not need it. Where the uid has no entry, ``initdb``
runs with nss_wrapper (the same approach as the official postgres container image): a preloaded
library that answers user look-ups from a passwd file syncd writes into the data directory.
"""

from __future__ import annotations

import glob
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from syncd.startup import StartupError

# Where distributions install it (Debian/Ubuntu: libnss-wrapper; Fedora/RHEL: nss_wrapper;
# Alpine: nss_wrapper).
_LIBRARY_GLOBS = (
    "/usr/lib/*-linux-gnu/libnss_wrapper.so*",
    "/usr/lib64/libnss_wrapper.so*",
    "/usr/lib/libnss_wrapper.so*",
    "/usr/local/lib/libnss_wrapper.so*",
)
_VARIABLES = ("LD_PRELOAD", "NSS_WRAPPER_PASSWD", "NSS_WRAPPER_GROUP")


def has_passwd_entry() -> bool:
    try:
        pwd.getpwuid(os.geteuid())
    except KeyError:
        return False
    return True


def nss_wrapper_library() -> str | None:
    for pattern in _LIBRARY_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


@contextmanager
def user_name_for_initdb(data_dir: Path) -> Iterator[None]:
    """Within the block, child processes (initdb and the servers it runs) can look up this
    process's uid by name, if they could not already."""
    if has_passwd_entry():
        yield
        return
    uid, gid = os.geteuid(), os.getegid()
    library = nss_wrapper_library()
    if library is None:
        raise StartupError(
            f"user id {uid} has no entry in /etc/passwd, and the embedded PostgreSQL's initdb "
            "needs a user name: install nss_wrapper (Debian/Ubuntu: apt-get install "
            "libnss-wrapper; the syncd image has it), run as a user that has an entry, or set "
            "SYNCD_DATABASE_URL to your own PostgreSQL"
        )
    files = data_dir.absolute() / "nss"
    files.mkdir(parents=True, exist_ok=True)
    (files / "passwd").write_text(f"syncd:x:{uid}:{gid}:syncd:{data_dir.absolute()}:/bin/false\n")
    (files / "group").write_text(f"syncd:x:{gid}:\n")
    saved = {name: os.environ.get(name) for name in _VARIABLES}
    preload = " ".join(filter(None, (library, saved["LD_PRELOAD"])))
    os.environ.update(LD_PRELOAD=preload, NSS_WRAPPER_PASSWD=str(files / "passwd"),
                      NSS_WRAPPER_GROUP=str(files / "group"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
