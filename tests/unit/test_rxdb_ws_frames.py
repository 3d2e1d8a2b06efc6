"""RxDB websocket frames: what is a request, where its token is, what a failed one answers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from syncd.exceptions import BadRequest, Forbidden
from syncd.web.rxdb_ws_frames import Request, echo, envelope, error_object, parse, token_of


@pytest.mark.parametrize(
    ("frame", "request_id", "problem"),
    [
        ('{"id": "a|b|1", "collection": "c", "method": "masterWrite", "params": [[]]}',
         "a|b|1", None),
        (b'{"id": 7, "method": "masterChangesSince"}', 7, None),
        ('{"id": "lone", "method": "masterWrite", "params": ["\\ud800"]}', "lone",
         "invalid_json"),
        ('{"id": "big", "method": "masterWrite", "params": [1e400]}', "big", "invalid_json"),
        ("not json {", None, None),
        ("[1, 2]", None, None),
        ('"RESYNC"', None, None),
        ('{"method": "masterChangesSince"}', None, None),
        ('{"id": null, "method": "masterChangesSince"}', None, None),
        ('{"id": "\\ud800", "method": "masterWrite", "params": [[]]}', None, None),
        (b"\xff\xfe", None, None),
    ],
)
def test_a_request_is_a_json_object_with_an_id(
    frame: str | bytes, request_id: Any, problem: str | None
) -> None:
    request = parse(frame)
    if request_id is None:
        assert request is None  # nothing could answer it
        return
    assert request is not None and request.id == request_id
    assert (request.problem.code if request.problem else None) == problem


@pytest.mark.parametrize(
    ("params", "token"),
    [
        ([{"Authorization": "Bearer t0k"}], "t0k"),
        ([{"authorization": "bearer  t0k "}], "t0k"),
        ([{"AUTHORIZATION": "t0k"}], "t0k"),
        ([{"Authorization": "Basic dXNlcjpwdw=="}], None),
        ([{"Authorization": "Bearer "}], None),
        ([{"Authorization": ""}], None),
        ([{"X-Token": "t0k"}], None),
        ([{"Authorization": 5}], None),
        ([], None),
        (None, None),
        (["Bearer t0k"], None),
    ],
)
def test_the_auth_token_comes_from_the_authorization_header(params: Any, token: Any) -> None:
    assert token_of(params) == token


@pytest.mark.parametrize(
    ("params", "checkpoint"),
    [
        ([{"id": "x.1", "lwt": 3}, 10], {"id": "x.1", "lwt": 3}),
        ([None, 10], None),
        (["cp-5", 10], None),  # only an object is a checkpoint the client can merge
        ([], None),
        ("junk", None),
    ],
)
def test_a_failed_pull_echoes_the_checkpoint_it_was_given(params: Any, checkpoint: Any) -> None:
    assert echo(params) == checkpoint


def test_an_answer_is_json_with_the_request_id_and_collection_as_sent() -> None:
    request = Request(id={"odd": "id"}, collection=None, method="x", params=None, size=0)
    error = Forbidden("no", code="forbidden")
    answer = orjson.loads(envelope(request, b'[{"a":1}]', error_object(error, error)))
    assert answer == {"id": {"odd": "id"}, "collection": None, "result": [{"a": 1}],
                      "error": {"status": 403, "code": "forbidden", "message": "no"}}
    details = BadRequest("bad", details=[1])
    assert error_object(details, details)["details"] == [1]
