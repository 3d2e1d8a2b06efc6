"""Settings: parsed from ``SYNCD_*`` variables once, checked, immutable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.config import MIB, ConfigError, Settings


def test_no_variables_means_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url == ""
    assert settings.data_dir == Path(".syncd")
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.max_body_bytes == 256 * MIB
    assert (settings.pull_default_limit, settings.pull_max_limit) == (100, 10_000)


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "value"),
    [
        ("SYNCD_PORT", "9000", "port", 9000),
        ("SYNCD_WORKERS", "4", "workers", 4),
        ("SYNCD_MAX_BODY_BYTES", "1048576", "max_body_bytes", MIB),
        ("SYNCD_PULL_DEFAULT_LIMIT", "50", "pull_default_limit", 50),
        ("SYNCD_PULL_MAX_LIMIT", "500", "pull_max_limit", 500),
        ("SYNCD_DB_POOL_MIN", "1", "db_pool_min", 1),
        ("SYNCD_DB_POOL_MAX", "20", "db_pool_max", 20),
        ("SYNCD_DB_STATEMENT_TIMEOUT_MS", "1500", "db_statement_timeout_ms", 1500),
        ("SYNCD_COLLECTION_CACHE_SECONDS", "0.25", "collection_cache_seconds", 0.25),
        ("SYNCD_COLLECTION_CACHE_SECONDS", "3", "collection_cache_seconds", 3.0),
        ("SYNCD_DATA_DIR", "/var/lib/syncd", "data_dir", Path("/var/lib/syncd")),
        ("SYNCD_DATA_DIR", "relative/dir", "data_dir", Path("relative/dir")),
        ("SYNCD_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("SYNCD_LOG_LEVEL", "debug", "log_level", "debug"),
        ("SYNCD_LOG_FORMAT", "json", "log_format", "json"),
        (
            "SYNCD_DATABASE_URL",
            "postgresql://u:p@db:5432/syncd",
            "database_url",
            "postgresql://u:p@db:5432/syncd",
        ),
        ("SYNCD_DATABASE_URL", "postgres://db/syncd", "database_url", "postgres://db/syncd"),
        ("SYNCD_RXDB_WS_PATH", "/sync/rxdb-ws", "rxdb_ws_path", "/sync/rxdb-ws"),
        ("SYNCD_FORWARD_RECHECK_SECONDS", "2.5", "forward_recheck_seconds", 2.5),
    ],
)
def test_each_variable_is_parsed_to_its_type(
    variable: str, raw: str, attribute: str, value: Any
) -> None:
    settings = Settings.from_env({variable: raw})
    parsed = getattr(settings, attribute)
    assert parsed == value
    assert type(parsed) is type(value)
    # ... and nothing else changed.
    default = getattr(Settings(), attribute)
    assert dataclasses.replace(settings, **{attribute: default}) == Settings()


@pytest.mark.parametrize("variable", ["SYNCD_PORT", "SYNCD_DATA_DIR", "SYNCD_DATABASE_URL"])
def test_an_empty_variable_means_the_default(variable: str) -> None:
    assert Settings.from_env({variable: ""}) == Settings()


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"PORT": "1"}, id="no-prefix"),
        pytest.param({"syncd_port": "1"}, id="lower-case"),
        pytest.param({"SYNCD_TEST_DATABASE_URL": "postgresql://db/x"}, id="the-tests-database"),
        pytest.param({"SYNCD_URL": "http://127.0.0.1:1", "SYNCD_PYTHON": "python3",
                      "SYNCD_PID": "1"}, id="test-and-load-scripts"),
    ],
)
def test_other_variables_are_not_settings(environ: dict[str, str]) -> None:
    assert Settings.from_env(environ) == Settings()


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("SYNCD_AUTHMODE", "SYNCD_AUTH_MODE"),
        ("SYNCD_JWT_ALGORITHM", "SYNCD_JWT_ALGORITHMS"),
        ("SYNCD_CORS_ORIGIN", "SYNCD_CORS_ORIGINS"),
        ("SYNCD_DATABASEURL", "SYNCD_DATABASE_URL"),
        ("SYNCD_TEST_DATABASE", "SYNCD_TEST_DATABASE_URL"),
        ("SYNCD_ZZZ", None),
    ],
)
def test_an_unknown_syncd_variable_is_refused_naming_the_closest_setting(
    variable: str, suggestion: str | None
) -> None:
    """A misspelled setting must not be ignored: SYNCD_AUTHMODE=jwt served with no auth."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: "jwt", "SYNCD_PORT": "9000"})
    message = str(caught.value)
    assert message.startswith(f"unknown setting {variable}")
    if suggestion is None:
        assert "did you mean" not in message
    elif suggestion == "SYNCD_TEST_DATABASE_URL":  # not a setting: never suggested
        assert "did you mean SYNCD_DATABASE_URL?" in message
    else:
        assert f"(did you mean {suggestion}?)" in message
    assert "\n" not in message


def test_every_unknown_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError, match=r"unknown settings SYNCD_AUTHMODE \(did you mean "
                       r"SYNCD_AUTH_MODE\?\), SYNCD_PORTT \(did you mean SYNCD_PORT\?\)"):
        Settings.from_env({"SYNCD_PORTT": "1", "SYNCD_AUTHMODE": "jwt"})


@pytest.mark.parametrize(
    ("environ", "summary"),
    [
        ({}, "none (anyone may read and write everything)"),
        ({"SYNCD_AUTH_MODE": "jwt", "SYNCD_JWT_ALGORITHMS": "HS256,RS256",
          "SYNCD_JWT_SECRET": "s3cret", "SYNCD_JWT_ISSUER": "https://id.example",
          "SYNCD_JWT_JWKS_URL": "https://u:pw@id.example/jwks?key=k"},
         "jwt, algorithms HS256, RS256, issuer https://id.example, audience (any), keys from "
         "the shared secret SYNCD_JWT_SECRET and JWKS https://id.example/jwks"),
        ({"SYNCD_AUTH_MODE": "forward",
          "SYNCD_FORWARD_URL": "http://svc:token@api.internal:8000/auth/check?k=v#f"},
         "forward to http://api.internal:8000/auth/check"),
        ({"SYNCD_AUTH_MODE": "api-key", "SYNCD_API_KEYS": "a:" + "0" * 64 + ",b:" + "1" * 64},
         "api-key; 2 service key(s)"),
    ],
)
def test_the_auth_summary_names_the_mode_and_no_secret(
    environ: dict[str, str], summary: str
) -> None:
    text = Settings.from_env(environ).auth_summary()
    assert text == summary
    for secret in ("s3cret", "pw", "token", "k=v", "0" * 64):
        assert secret not in text


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCD_PORT", "9123")
    monkeypatch.setenv("SYNCD_DATA_DIR", "/srv/syncd")
    settings = Settings.from_env()
    assert settings.port == 9123
    assert settings.data_dir == Path("/srv/syncd")


@pytest.mark.parametrize(
    ("variable", "raw", "kind"),
    [
        ("SYNCD_PORT", "http", "an integer"),
        ("SYNCD_PORT", "80.5", "an integer"),
        ("SYNCD_WORKERS", "four", "an integer"),
        ("SYNCD_MAX_BODY_BYTES", "256MB", "an integer"),
        ("SYNCD_DB_STATEMENT_TIMEOUT_MS", "30s", "an integer"),
        ("SYNCD_COLLECTION_CACHE_SECONDS", "soon", "a number"),
        ("SYNCD_COLLECTION_CACHE_SECONDS", "5s", "a number"),
    ],
)
def test_an_unparsable_value_names_the_variable_and_the_value(
    variable: str, raw: str, kind: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: raw})
    message = str(caught.value)
    assert message.startswith(f"{variable} must be a")
    assert kind in message
    assert message.endswith(f"got {raw!r}")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param(
            {"SYNCD_PULL_DEFAULT_LIMIT": "0"},
            "SYNCD_PULL_DEFAULT_LIMIT must be between 1 and SYNCD_PULL_MAX_LIMIT (10000), got 0",
            id="default-limit-zero",
        ),
        pytest.param(
            {"SYNCD_PULL_DEFAULT_LIMIT": "-5"},
            "SYNCD_PULL_DEFAULT_LIMIT must be between 1 and SYNCD_PULL_MAX_LIMIT (10000), got -5",
            id="default-limit-negative",
        ),
        pytest.param(
            {"SYNCD_PULL_MAX_LIMIT": "50"},
            "SYNCD_PULL_DEFAULT_LIMIT must be between 1 and SYNCD_PULL_MAX_LIMIT (50), got 100",
            id="max-limit-below-default",
        ),
        pytest.param(
            {"SYNCD_MAX_BODY_BYTES": "1023"},
            "SYNCD_MAX_BODY_BYTES must be at least 1024",
            id="tiny-body",
        ),
        pytest.param(
            {"SYNCD_DB_POOL_MIN": "0"},
            "need 1 <= SYNCD_DB_POOL_MIN <= SYNCD_DB_POOL_MAX",
            id="pool-min-zero",
        ),
        pytest.param(
            {"SYNCD_DB_POOL_MIN": "11"},
            "need 1 <= SYNCD_DB_POOL_MIN <= SYNCD_DB_POOL_MAX",
            id="pool-min-above-max",
        ),
        pytest.param(
            {"SYNCD_DB_POOL_MAX": "1"},
            "need 1 <= SYNCD_DB_POOL_MIN <= SYNCD_DB_POOL_MAX",
            id="pool-max-below-min",
        ),
        pytest.param({"SYNCD_WORKERS": "0"}, "SYNCD_WORKERS must be at least 1", id="no-workers"),
        pytest.param({"SYNCD_LOG_FORMAT": "logfmt"},
                     "SYNCD_LOG_FORMAT must be text or json, got 'logfmt'", id="log-format"),
        pytest.param(
            {"SYNCD_DATABASE_URL": "mysql://db/syncd"},
            "SYNCD_DATABASE_URL must start with postgresql://",
            id="not-postgres",
        ),
        pytest.param(
            {"SYNCD_DATABASE_URL": "db:5432/syncd"},
            "SYNCD_DATABASE_URL must start with postgresql://",
            id="no-scheme",
        ),
        pytest.param(
            {"SYNCD_RXDB_WS_PATH": "rxdb/ws/"},
            "SYNCD_RXDB_WS_PATH must be a path like /rxdb/ws (a leading and no trailing slash; "
            "letters, digits, '-', '_', '.', '/'), got 'rxdb/ws/'",
            id="rxdb-ws-path-without-leading-slash",
        ),
        pytest.param(
            {"SYNCD_FORWARD_RECHECK_SECONDS": "-1"},
            "SYNCD_FORWARD_RECHECK_SECONDS must not be negative (0 disables rechecks), got -1.0",
            id="negative-recheck",
        ),
    ],
)
def test_from_env_checks_the_settings(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"SYNCD_PULL_DEFAULT_LIMIT": "1"}, id="default-limit-one"),
        pytest.param(
            {"SYNCD_PULL_DEFAULT_LIMIT": "10000", "SYNCD_PULL_MAX_LIMIT": "10000"},
            id="default-limit-equals-max",
        ),
        pytest.param({"SYNCD_MAX_BODY_BYTES": "1024"}, id="smallest-body"),
        pytest.param({"SYNCD_DB_POOL_MIN": "1", "SYNCD_DB_POOL_MAX": "1"}, id="pool-of-one"),
        pytest.param(
            {"SYNCD_DB_POOL_MIN": "10", "SYNCD_DB_POOL_MAX": "10"}, id="pool-min-equals-max"
        ),
        pytest.param({"SYNCD_WORKERS": "1"}, id="one-worker"),
        pytest.param({"SYNCD_FORWARD_RECHECK_SECONDS": "0"}, id="rechecks-off"),
    ],
)
def test_from_env_accepts_the_boundaries(environ: dict[str, str]) -> None:
    Settings.from_env(environ)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(workers=0), "SYNCD_WORKERS"),
        (Settings(pull_default_limit=101, pull_max_limit=100), "SYNCD_PULL_DEFAULT_LIMIT"),
        (Settings(max_body_bytes=0), "SYNCD_MAX_BODY_BYTES"),
        (Settings(db_pool_min=3, db_pool_max=2), "SYNCD_DB_POOL_MIN"),
        (Settings(database_url="sqlite:///x.db"), "SYNCD_DATABASE_URL"),
    ],
)
def test_check_applies_to_settings_built_in_code(settings: Settings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings.check()


def test_settings_are_immutable() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_default_body_limit_admits_a_full_push_of_one_megabyte_documents() -> None:
    # RxDB's push.batchSize defaults to 100, and replicateServer retries a refused batch forever:
    # 100 rows whose assumed and new states are 1 MB of JSON each must fit (rxdb-protocol §5.2.7).
    def state(index: int, revision: str) -> dict[str, Any]:
        frame = {"id": f"doc-{index:03d}", "title": revision, "payload": "", "_deleted": False}
        padding = MIB - len(orjson.dumps(frame))
        return {**frame, "payload": "x" * padding}

    one_row = {"assumedMasterState": state(0, "old"), "newDocumentState": state(0, "new")}
    assert len(orjson.dumps(one_row["assumedMasterState"])) == MIB
    assert len(orjson.dumps(one_row["newDocumentState"])) == MIB
    # Every row serialises to the same length; the body is "[" + rows joined by "," + "]".
    body_bytes = 100 * len(orjson.dumps(one_row)) + 99 + 2
    assert body_bytes > 200 * MIB
    assert body_bytes <= Settings().max_body_bytes
    assert body_bytes <= Settings.from_env({}).max_body_bytes
