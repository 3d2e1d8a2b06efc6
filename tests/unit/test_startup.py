"""The words of start-up failures: one line, the setting to change, never a password."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest

from syncd.config import Settings
from syncd.db.reach import refusal
from syncd.startup import StartupError, check_data_dir, check_port, describe_database, describe_url


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("postgresql://syncd:s3cret@db.internal:6432/app", "syncd@db.internal:6432/app"),
        ("postgresql://syncd:p%40ss@db.internal/app?sslmode=require", "syncd@db.internal:5432/app"),
        ("postgresql://postgres:@/syncd?host=/tmp/x/pgdata", "postgres@/tmp/x/pgdata:5432/syncd"),
        ("postgres://db/app", "db:5432/app"),
        ("postgresql://u:pw@h:notaport/d", "u@h:notaport/d"),
    ],
)
def test_a_database_is_described_without_its_password(url: str, described: str) -> None:
    assert describe_url(url) == described
    settings = Settings(database_url=url)
    assert describe_database(settings) == f"{described} (SYNCD_DATABASE_URL)"


def test_the_embedded_database_is_described_by_its_absolute_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert describe_database(settings) == \
        f"the embedded PostgreSQL in {tmp_path / 'data'} (SYNCD_DATA_DIR)"


def test_a_startup_error_is_one_line() -> None:
    error = StartupError("role \"x\" does not exist\nDETAIL:  something\n  HINT: more")
    assert str(error) == 'role "x" does not exist DETAIL: something HINT: more'


def test_refusals_name_the_setting_and_hide_the_password() -> None:
    url = "postgresql://app:s3cret@db:5432/app"
    password = refusal(url, asyncpg.InvalidPasswordError("password authentication failed"))
    missing = refusal(url, asyncpg.InvalidCatalogNameError('database "app" does not exist'))
    for message in (password, missing):
        assert "SYNCD_DATABASE_URL (app@db:5432/app)" in message and "s3cret" not in message
    assert "fix the user or password in SYNCD_DATABASE_URL" in password
    assert "create it (CREATE DATABASE)" in missing


def test_a_port_in_use_names_the_flag_and_the_setting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"port {port} on 127.0.0.1 is already in use.*"
                                               "--port or SYNCD_PORT"):
            check_port("127.0.0.1", port)


def test_a_free_port_passes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    check_port("127.0.0.1", port)


def test_a_data_dir_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StartupError, match=r"cannot be made: .*file is a file.*SYNCD_DATA_DIR"):
        check_data_dir(tmp_path / "file" / "data")
