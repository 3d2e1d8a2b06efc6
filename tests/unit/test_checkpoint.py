"""Checkpoints: encode/decode of positions and the native pull's ``checkpoint`` query value."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest

from syncd import checkpoint as checkpoints
from syncd.checkpoint import JS_MAX_SAFE_INTEGER, ORIGIN, Position
from syncd.exceptions import BadRequest

EPOCH = "1a2b3c4d5e6f7a8b"  # to_hex(system_identifier): lowercase hex, at most 16 digits
OTHER_EPOCH = "ffffffffffffffff"

# Characters a URL carries untouched (RFC 3986 "unreserved").
UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")


# --- encode / decode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "wire"),
    [
        (Position(0, 0), {"id": f"{EPOCH}.0", "lwt": 0}),
        (Position(42, 7), {"id": f"{EPOCH}.7", "lwt": 42}),
        (Position(JS_MAX_SAFE_INTEGER, 0), {"id": f"{EPOCH}.0", "lwt": 2**53 - 1}),
    ],
)
def test_encode_puts_xid_in_lwt_and_epoch_dot_seq_in_id(
    position: Position, wire: dict[str, Any]
) -> None:
    assert checkpoints.encode(position, EPOCH) == wire


@pytest.mark.parametrize(
    "position",
    [
        Position(0, 0),
        Position(1, 0),
        Position(5, 3),
        Position(123_456_789, 999),
        Position(JS_MAX_SAFE_INTEGER, 10**15),
    ],
)
def test_decode_inverts_encode(position: Position) -> None:
    assert checkpoints.decode(checkpoints.encode(position, EPOCH), EPOCH) == position


@pytest.mark.parametrize("position", [Position(0, 0), Position(9, 12), Position(2**40, 3)])
def test_encoded_id_survives_a_client_that_does_not_url_encode_it(position: Position) -> None:
    wire = checkpoints.encode(position, EPOCH)
    assert UNRESERVED.fullmatch(wire["id"])
    assert type(wire["lwt"]) is int


@pytest.mark.parametrize(
    "checkpoint",
    [
        pytest.param(None, id="first-pull-none"),
        pytest.param({"id": "", "lwt": 0}, id="rxdb-server-first-pull"),
        pytest.param({"id": "", "lwt": 0.0}, id="rxdb-server-first-pull-parsefloat"),
        pytest.param({}, id="empty-object"),
        pytest.param({"id": None, "lwt": None}, id="nulls"),
        pytest.param({"id": ""}, id="empty-id-no-lwt"),
        pytest.param({"lwt": 0}, id="zero-lwt-no-id"),
    ],
)
def test_decode_starts_at_the_origin(checkpoint: Any) -> None:
    assert checkpoints.decode(checkpoint, EPOCH) == ORIGIN


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"id": f"{OTHER_EPOCH}.5", "lwt": 10},
        {"id": "0.5", "lwt": 10},
        {"id": f"{EPOCH[:-1]}.5", "lwt": 10},  # a prefix of our epoch is another epoch
        {"id": "abc.5", "lwt": 0},
    ],
)
def test_checkpoint_from_another_cluster_replays_from_the_origin(
    checkpoint: dict[str, Any],
) -> None:
    assert checkpoints.decode(checkpoint, EPOCH) == ORIGIN


def test_decode_accepts_an_integral_float_lwt_as_an_integer() -> None:
    # A client that parses lwt with parseFloat may hand back 7.0 for 7.
    position = checkpoints.decode({"id": f"{EPOCH}.3", "lwt": 7.0}, EPOCH)
    assert position == Position(7, 3)
    assert type(position.xid) is int


@pytest.mark.parametrize("lwt", [0, 1, 2**32, JS_MAX_SAFE_INTEGER])
def test_decode_accepts_lwt_up_to_the_javascript_safe_integer(lwt: int) -> None:
    assert checkpoints.decode({"id": f"{EPOCH}.1", "lwt": lwt}, EPOCH) == Position(lwt, 1)


@pytest.mark.parametrize(
    "lwt",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(-1, id="negative"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param(1.5, id="fractional"),
        pytest.param(2**53, id="2^53"),
        pytest.param(float(2**53), id="2^53-float"),
        pytest.param(2**64, id="beyond-64-bit"),
        pytest.param(1e300, id="huge-float"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(float("nan"), id="nan"),
        pytest.param("5", id="string"),
        pytest.param(None, id="missing"),
        pytest.param([5], id="array"),
        pytest.param({"v": 5}, id="object"),
    ],
)
def test_decode_rejects_an_lwt_javascript_cannot_carry_exactly(lwt: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.decode({"id": f"{EPOCH}.1", "lwt": lwt}, EPOCH)
    assert caught.value.code == "invalid_checkpoint"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "lwt",
    [
        # False == 0 in Python, but {"id": "", "lwt": false} is no rxdb-server first pull.
        pytest.param(False, id="false"),
        pytest.param(True, id="true"),
        pytest.param(-1, id="negative"),
        pytest.param(5, id="nonzero"),
    ],
)
def test_an_empty_id_is_the_origin_only_with_lwt_zero(lwt: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.decode({"id": "", "lwt": lwt}, EPOCH)
    assert caught.value.code == "invalid_checkpoint"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="missing"),
        pytest.param(5, id="number"),
        pytest.param("nodot", id="no-dot"),
        pytest.param(f"{EPOCH}.", id="no-seq"),
        pytest.param(".5", id="no-epoch"),
        pytest.param(f"{EPOCH}.-1", id="negative-seq"),
        pytest.param(f"{EPOCH}.5.6", id="two-dots"),
        pytest.param(f"{EPOCH}.5x", id="seq-not-digits"),
        pytest.param(f"{EPOCH}.1e3", id="seq-exponent"),
        pytest.param(f"{EPOCH.upper()}.5", id="uppercase-epoch"),
        pytest.param("g.5", id="epoch-not-hex"),
        pytest.param("0" * 17 + ".5", id="epoch-too-long"),
        pytest.param(f"{EPOCH}." + "1" * 17, id="seq-too-long"),
        pytest.param(f" {EPOCH}.5", id="leading-space"),
        pytest.param("cp-5", id="foreign-checkpoint"),
    ],
)
def test_decode_rejects_a_malformed_id(token: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.decode({"id": token, "lwt": 3}, EPOCH)
    assert caught.value.code == "invalid_checkpoint"
    assert '{"id": "<epoch>.<seq>", "lwt": <integer>}' in caught.value.message


@pytest.mark.parametrize(
    ("checkpoint", "type_name"),
    [
        ("cp-5", "str"),
        (5, "int"),
        (5.5, "float"),
        (True, "bool"),
        ([f"{EPOCH}.1", 3], "list"),
    ],
)
def test_decode_rejects_a_checkpoint_that_is_not_an_object(checkpoint: Any, type_name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.decode(checkpoint, EPOCH)
    assert caught.value.code == "invalid_checkpoint"
    assert "must be a JSON object" in caught.value.message
    assert caught.value.message.endswith(f"got {type_name}")


def test_decode_error_quotes_the_checkpoint_it_got() -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.decode({"id": "x", "lwt": 1}, EPOCH)
    assert """'{"id":"x","lwt":1}'""" in caught.value.message


def test_decode_error_shortens_a_long_checkpoint() -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.decode({"id": "x" * 500, "lwt": 1}, EPOCH)
    quoted = caught.value.message.split("got ", 1)[1]
    assert quoted.endswith("...'")
    assert len(quoted) == 80 + 2  # 77 characters, "...", and the quotes


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (Position(1, 9), Position(2, 0)),  # the xid decides first
        (Position(2, 0), Position(2, 1)),  # then the sequence inside the transaction
        (ORIGIN, Position(0, 1)),
    ],
)
def test_positions_order_by_xid_then_seq(earlier: Position, later: Position) -> None:
    assert earlier < later
    assert not later < earlier


# --- the native pull's ?checkpoint= value -------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "null"])
def test_parse_query_value_absent_empty_or_null_is_a_first_pull(raw: str | None) -> None:
    assert checkpoints.parse_query_value(raw) is None


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('{"id":"ab.1","lwt":2}', {"id": "ab.1", "lwt": 2}),
        ('{ "lwt" : 0 , "id" : "" }', {"id": "", "lwt": 0}),
        ("{}", {}),
    ],
)
def test_parse_query_value_reads_a_json_object(raw: str, value: dict[str, Any]) -> None:
    assert checkpoints.parse_query_value(raw) == value


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("[object Object]", id="template-string-of-an-object"),
        pytest.param("{", id="truncated"),
        pytest.param("{'id': 'a.1'}", id="single-quotes"),
        pytest.param("undefined", id="undefined"),
        pytest.param("%7B%7D", id="still-url-encoded"),
    ],
)
def test_parse_query_value_explains_how_to_encode_text_that_is_not_json(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.parse_query_value(raw)
    assert caught.value.code == "invalid_checkpoint"
    assert "is not JSON" in caught.value.message
    assert repr(raw) in caught.value.message
    assert "encodeURIComponent(JSON.stringify(checkpoint))" in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("5", id="number"),
        pytest.param('"cp-5"', id="string"),
        pytest.param("[1,2]", id="array"),
        pytest.param("true", id="boolean"),
        pytest.param("1.5", id="float"),
    ],
)
def test_parse_query_value_rejects_json_that_is_not_an_object(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        checkpoints.parse_query_value(raw)
    assert caught.value.code == "invalid_checkpoint"
    assert "must be a JSON object (or null)" in caught.value.message
    assert "encodeURIComponent(JSON.stringify(checkpoint))" in caught.value.message


def test_to_query_value_of_none_is_empty() -> None:
    assert checkpoints.to_query_value(None) == ""


def test_to_query_value_percent_encodes_every_reserved_character() -> None:
    assert (
        checkpoints.to_query_value({"id": "ab.1", "lwt": 2})
        == "%7B%22id%22%3A%22ab.1%22%2C%22lwt%22%3A2%7D"
    )


@pytest.mark.parametrize(
    "checkpoint",
    [
        None,
        {},
        {"id": "", "lwt": 0},
        {"id": "ab.1", "lwt": 2},
        {"id": "a b&c=d/e?f#g+h%i", "lwt": 1},
        {"id": "ünïcode ✓", "lwt": 3},
        {"nested": {"x": [1, 2, None]}},
    ],
)
def test_to_query_value_round_trips_through_parse_query_value(
    checkpoint: dict[str, Any] | None,
) -> None:
    encoded = checkpoints.to_query_value(checkpoint)
    assert UNRESERVED.fullmatch(encoded.replace("%", ""))
    assert checkpoints.parse_query_value(unquote(encoded)) == checkpoint


@pytest.mark.parametrize("position", [ORIGIN, Position(1, 0), Position(77, 5)])
def test_a_pulled_checkpoint_sent_back_by_query_decodes_to_the_same_position(
    position: Position,
) -> None:
    sent = checkpoints.to_query_value(checkpoints.encode(position, EPOCH))
    received = checkpoints.parse_query_value(unquote(sent))
    assert checkpoints.decode(received, EPOCH) == position
