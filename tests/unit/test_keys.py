"""Length limits of ids and partitions (syncd/keys.py) where they are checked: push rows, access
rules and the schema check of ``syncd collections add``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from syncd.auth.access import AccessRule
from syncd.auth.identity import Identity
from syncd.conflicts import parse_push_rows
from syncd.exceptions import BadRequest, Forbidden, Unprocessable
from syncd.keys import MAX_ID_BYTES, MAX_PARTITION_BYTES, bytes_over
from syncd.schema import SchemaError, check_servable, key_length_warning


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"newDocumentState": {"id": i}} for i in ids]


def test_bytes_over_counts_utf8_bytes() -> None:
    assert bytes_over("a" * 10, 10) is None
    assert bytes_over("é" * 5, 10) is None
    assert bytes_over("é" * 6, 10) == 12
    assert bytes_over("😀" * 3, 10) == 12


def test_ids_at_the_limit_pass_and_longer_ones_are_named_by_row_and_prefix() -> None:
    at_limit = "x" * MAX_ID_BYTES
    assert [r.id for r in parse_push_rows(rows(at_limit), "id", lambda _: [], max_rows=9)] == [
        at_limit]
    too_long = "y" * (MAX_ID_BYTES + 1)
    with pytest.raises(Unprocessable) as raised:
        parse_push_rows(rows("ok", too_long), "id", lambda _: [], max_rows=9)
    assert raised.value.code == "schema_violation"
    assert raised.value.details == [{"id": "row 1", "problems": [
        f"id: the primary key {'y' * 37 + '...'!r} has {MAX_ID_BYTES + 1} bytes of UTF-8; "
        f"syncd stores ids of at most {MAX_ID_BYTES} bytes. Use shorter ids, and give the key "
        "a \"maxLength\" in the schema"]}]
    assert too_long not in str(raised.value)  # an 8 KB id is not repeated in the answer
    assert len(orjson.dumps(raised.value.details)) < 400


def test_partitions_longer_than_the_limit_are_refused() -> None:
    rule = AccessRule.parse({"partition_claim": "tenant"})
    fits = "t" * MAX_PARTITION_BYTES
    assert rule.partition_for(Identity("u", {"tenant": fits}), write=True) == fits
    with pytest.raises(Forbidden) as user:
        rule.partition_for(Identity("u", {"tenant": fits + "é"}), write=False)
    assert user.value.code == "partition_too_long"
    assert f"{MAX_PARTITION_BYTES + 2} bytes" in user.value.message
    with pytest.raises(BadRequest) as service:
        rule.partition_for(Identity("svc", service=True, acting_partition=fits + "x"), write=True)
    assert service.value.code == "partition_too_long"


def schema(**key: Any) -> dict[str, Any]:
    return {"version": 0, "primaryKey": "id", "type": "object",
            "properties": {"id": {"type": "string", **key}}}


def test_collections_add_refuses_a_max_length_above_the_limit_and_warns_without_one() -> None:
    with pytest.raises(SchemaError, match=f"at most {MAX_ID_BYTES} bytes"):
        check_servable(schema(maxLength=MAX_ID_BYTES + 1))
    check_servable(schema())
    assert "no maxLength" in (key_length_warning(schema()) or "")
    assert "non-ASCII" in (key_length_warning(schema(maxLength=MAX_ID_BYTES)) or "")
    assert key_length_warning(schema(maxLength=MAX_ID_BYTES // 4)) is None
    assert key_length_warning(schema(maxLength=100)) is None
