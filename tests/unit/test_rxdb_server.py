"""The rxdb-server adapter's pure parts: query values as the client formats them, SSE framing,
its settings."""

from __future__ import annotations

import orjson
import pytest

from syncd.config import ConfigError, Settings
from syncd.exceptions import BadRequest
from syncd.web.bodies import parse_limit
from syncd.web.rxdb_server import outdated, parse_lwt, sse_event


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (None, 0),
        ("", 0),
        ("0", 0),
        ("-0", 0),
        ("0.0", 0),
        ("755", 755),
        (str(2**53 - 1), 2**53 - 1),
        ("1795468969713.01", 1795468969713.01),  # rxdb's own lwt: ms with a 0.01 counter
        ("1e3", 1000),
        ("  42", 42),  # parseFloat skips leading whitespace ...
        ("42abc", 42),  # ... and reads the longest numeric prefix
        (".5", 0.5),
    ],
)
def test_lwt_is_read_like_parse_float(raw: str | None, value: float) -> None:
    parsed = parse_lwt(raw)
    assert parsed == value
    assert type(parsed) is type(value)  # whole numbers are ints: they echo as 755, not 755.0


@pytest.mark.parametrize("raw", ["abc", "NaN", "Infinity", "-Infinity", "1e999", "+", "."])
def test_lwt_that_is_not_a_finite_number_is_a_400(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_lwt(raw)
    assert caught.value.code == "invalid_checkpoint"
    assert repr(raw) in caught.value.message


def test_limit_absent_means_the_default_and_garbage_is_a_400() -> None:
    assert parse_limit(None) is None and parse_limit("") is None
    assert parse_limit("100") == 100
    with pytest.raises(BadRequest) as caught:
        parse_limit("ten")
    assert caught.value.code == "invalid_limit"


def test_an_event_is_one_unnamed_data_field_and_a_blank_line() -> None:
    body = b'{"documents":[{"id":"\xc3\xa9"}],"checkpoint":{"id":"e.1","lwt":5}}'
    assert sse_event(body) == "data: " + body.decode() + "\n\n"


@pytest.mark.parametrize("separator", ["\n", "\r\n", "\r"])
def test_line_breaks_in_the_json_become_several_data_lines(separator: str) -> None:
    body = f'{{"documents":[{separator}{{"id":"a"}}],{separator}"checkpoint":null}}'.encode()
    event = sse_event(body)
    assert event.endswith("\n\n") and "\r" not in event
    lines = event[:-2].split("\n")
    assert all(line.startswith("data: ") for line in lines)
    # EventSource joins the data lines with "\n": the same JSON value.
    joined = "\n".join(line[len("data: "):] for line in lines)
    assert orjson.loads(joined) == {"documents": [{"id": "a"}], "checkpoint": None}


def test_outdated_is_worded_like_rxdb_server() -> None:
    response = outdated(0, 3)
    assert response.status_code == 426
    assert orjson.loads(response.body) == {
        "code": 426, "error": True, "message": "Outdated version 0 (newest is 3)",
    }


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.rxdb_server_prefix == "/rxdb"
    assert settings.sse_keepalive_seconds == 15.0
    assert settings.cors_origins == "" and settings.cors_origin_list == ()


@pytest.mark.parametrize(
    ("environ", "attribute", "value"),
    [
        ({"SYNCD_RXDB_SERVER_PREFIX": "/sync/rxdb"}, "rxdb_server_prefix", "/sync/rxdb"),
        ({"SYNCD_SSE_KEEPALIVE_SECONDS": "0.5"}, "sse_keepalive_seconds", 0.5),
        ({"SYNCD_SSE_KEEPALIVE_SECONDS": "0"}, "sse_keepalive_seconds", 0.0),
        ({"SYNCD_CORS_ORIGINS": "*"}, "cors_origin_list", ("*",)),
        (
            {"SYNCD_CORS_ORIGINS": "https://app.example.com, http://localhost:3000,"},
            "cors_origin_list",
            ("https://app.example.com", "http://localhost:3000"),
        ),
    ],
)
def test_settings_are_parsed(environ: dict[str, str], attribute: str, value: object) -> None:
    assert getattr(Settings.from_env(environ), attribute) == value


def test_an_empty_prefix_is_allowed_only_in_code() -> None:
    # An empty variable means "the default"; serving at the root takes Settings(prefix="").
    assert Settings.from_env({"SYNCD_RXDB_SERVER_PREFIX": ""}).rxdb_server_prefix == "/rxdb"
    Settings(rxdb_server_prefix="").check()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"SYNCD_RXDB_SERVER_PREFIX": "rxdb"}, "SYNCD_RXDB_SERVER_PREFIX"),
        ({"SYNCD_RXDB_SERVER_PREFIX": "/rxdb/"}, "SYNCD_RXDB_SERVER_PREFIX"),
        ({"SYNCD_RXDB_SERVER_PREFIX": "/rx db"}, "SYNCD_RXDB_SERVER_PREFIX"),
        ({"SYNCD_RXDB_SERVER_PREFIX": "/{x}"}, "SYNCD_RXDB_SERVER_PREFIX"),
        ({"SYNCD_SSE_KEEPALIVE_SECONDS": "-1"}, "SYNCD_SSE_KEEPALIVE_SECONDS"),
        ({"SYNCD_SSE_KEEPALIVE_SECONDS": "nan"}, "SYNCD_SSE_KEEPALIVE_SECONDS"),
        ({"SYNCD_CORS_ORIGINS": "https://app.example.com/"}, "SYNCD_CORS_ORIGINS"),
        ({"SYNCD_CORS_ORIGINS": "app.example.com"}, "SYNCD_CORS_ORIGINS"),
        ({"SYNCD_CORS_ORIGINS": "https://a.example/path"}, "SYNCD_CORS_ORIGINS"),
    ],
)
def test_unusable_settings_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(environ)

