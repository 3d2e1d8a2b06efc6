"""Response bodies spliced from stored JSON text (syncd/wire.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from syncd.wire import json_array, page_body

STORED = ['{"id": "a", "n": 1}', '{"id": "b", "title": "ünïcödé ✓"}', '{"id": "c", "x": [1, {}]}']


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_a_page_is_the_documents_and_the_checkpoint(count: int) -> None:
    checkpoint: dict[str, Any] = {"id": "abc.7", "lwt": 42}
    body = page_body(STORED[:count], checkpoint)
    assert orjson.loads(body) == {
        "documents": [orjson.loads(doc) for doc in STORED[:count]],
        "checkpoint": checkpoint,
    }


def test_an_empty_page_can_echo_a_null_checkpoint() -> None:
    assert page_body([], None) == b'{"documents":[],"checkpoint":null}'


@pytest.mark.parametrize("count", [0, 1, 3])
def test_an_array_is_spliced_from_json_texts(count: int) -> None:
    assert orjson.loads(json_array(iter(STORED[:count]))) == [
        orjson.loads(doc) for doc in STORED[:count]
    ]


def test_splicing_leaves_the_documents_untouched() -> None:
    # The hub sends one page to many subscribers: the caller's list must stay as it was.
    documents = list(STORED)
    page_body(documents, {"id": "abc.7", "lwt": 42})
    json_array(documents)
    assert documents == STORED
