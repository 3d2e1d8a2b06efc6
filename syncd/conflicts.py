"""Push rows and the conflict rules that can be decided without the database. Pure; no I/O.

The comparison itself (stored state vs ``assumedMasterState``) runs inside PostgreSQL with
``jsonb =``: key order ignored, type-strict (``true`` is not ``1``), numerically equal numbers
equal. Python's ``==`` gets ``True == 1`` wrong, so it never decides a conflict here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import orjson

from syncd.exceptions import BadRequest, Unprocessable
from syncd.keys import MAX_ID_BYTES, bytes_over
from syncd.schema import DELETED, RESERVED_FIELDS, describe_problems, nul_path

Document = dict[str, Any]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made building
# the rows of a push cost a third as much as validating their documents.
@dataclass(slots=True)
class PushRow:
    id: str
    assumed: Document | None  # absent and null mean the same: "I believe it does not exist"
    new: Document
    # The JSON text of ``assumed`` and ``new`` as PostgreSQL receives it, built once while
    # checking the row; None when not built (the store then encodes the document itself).
    assumed_json: str | None = dataclasses.field(default=None, compare=False, repr=False)
    new_json: str | None = dataclasses.field(default=None, compare=False, repr=False)


def parse_push_rows(
    body: Any,
    primary_key: str,
    validate: Callable[[Document], list[str]],
    *,
    max_rows: int,
) -> list[PushRow]:
    """Check a push body and return its rows, normalised; raise on the first class of problem.

    Shape problems (400) are reported before document problems (422), and every document problem
    of the batch is reported at once, so a client can fix them all in one go.
    """
    if not isinstance(body, list):
        raise BadRequest(
            "push body must be a JSON array of {\"assumedMasterState\", \"newDocumentState\"} "
            f"rows, got {_json_type(body)}",
            code="invalid_push_body",
        )
    if len(body) > max_rows:
        raise BadRequest(
            f"push has {len(body)} rows; at most {max_rows} are accepted per request",
            code="too_many_rows",
        )
    for index, row in enumerate(body):
        _check_row_shape(index, row)

    rows: list[PushRow] = []
    problems: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for index, row in enumerate(body):
        new, assumed = row["newDocumentState"], row.get("assumedMasterState")
        doc_id = new.get(primary_key)
        if not isinstance(doc_id, str) or doc_id == "":
            problems.append(
                (f"row {index}", [f"{primary_key}: the primary key is missing or not a string"])
            )
            continue
        too_long = bytes_over(doc_id, MAX_ID_BYTES)
        if too_long is not None:
            # Named by its row: an id this long is no use in a message.
            problems.append((f"row {index}", [
                f"{primary_key}: the primary key {_short(doc_id)} has {too_long} bytes of UTF-8; "
                f"syncd stores ids of at most {MAX_ID_BYTES} bytes. Use shorter ids, and give the "
                f"key a \"maxLength\" in the schema"]))
            continue
        # Checked as sent (a schema may limit the number of properties); stored and compared
        # with the _deleted flag.
        stored = with_deleted_flag(new)
        new_json = _encoded(stored)
        found = _document_problems(new, new_json, validate)
        assumed_json = None
        if assumed is not None:
            assumed = with_deleted_flag(assumed)
            assumed_json = _encoded(assumed)
            if assumed.get(primary_key) != doc_id:
                found.append(f"assumedMasterState.{primary_key}: differs from newDocumentState's")
            nul = _nul_path(assumed, assumed_json)
            if nul is not None:
                found.append(f"assumedMasterState.{nul}: contains \\u0000")
        if found:
            problems.append((doc_id, found))
            continue
        if doc_id in seen:
            raise BadRequest(
                f"document {doc_id!r} appears twice in one push; send one row per id",
                code="duplicate_id",
            )
        seen.add(doc_id)
        rows.append(PushRow(doc_id, assumed, stored, assumed_json, new_json))
    if problems:
        raise describe_problems(problems)
    return rows


@overload
def with_deleted_flag(doc: Document) -> Document: ...
@overload
def with_deleted_flag(doc: None) -> None: ...
def with_deleted_flag(doc: Document | None) -> Document | None:
    """RxDB reads a missing ``_deleted`` as false; store and compare it explicitly as false."""
    if doc is None or DELETED in doc:
        return doc
    return {**doc, DELETED: False}


def _check_row_shape(index: int, row: Any) -> None:
    if not isinstance(row, dict) or not isinstance(row.get("newDocumentState"), dict):
        raise BadRequest(
            f"push row {index} must be an object with a \"newDocumentState\" object, "
            f"got {_json_type(row)}",
            code="invalid_push_row",
        )
    assumed = row.get("assumedMasterState")
    if assumed is not None and not isinstance(assumed, dict):
        raise BadRequest(
            f"push row {index}: \"assumedMasterState\" must be an object, null or absent, "
            f"got {_json_type(assumed)}",
            code="invalid_push_row",
        )


def _encoded(doc: Document) -> str | None:
    """The document's JSON text; None when orjson cannot write it (nested too deeply, an
    integer beyond 64 bits): the store then raises the encoder's error, as it always did."""
    try:
        return orjson.dumps(doc).decode()
    except orjson.JSONEncodeError:
        return None


def _nul_path(doc: Document, text: str | None) -> str | None:
    """``nul_path``, skipped when the JSON text shows there is no U+0000 (orjson writes it as
    ``\\u0000``, in keys and values alike): walking every string of a document in Python cost
    as much as validating it against the schema."""
    if text is not None and "\\u0000" not in text:
        return None
    return nul_path(doc)


def _document_problems(
    doc: Document, text: str | None, validate: Callable[[Document], list[str]]
) -> list[str]:
    found: list[str] = []
    nul = _nul_path(doc, text)
    if nul is not None:
        found.append(f"{nul}: contains \\u0000, which PostgreSQL cannot store")
    deleted = doc.get(DELETED, False)
    if not isinstance(deleted, bool):
        found.append(f"{DELETED}: must be true or false")
    for name in RESERVED_FIELDS:
        if name in doc:
            found.append(f"{name}: is RxDB-internal and must not be sent to the server")
    return found or validate(doc)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


# orjson writes at most this many nested levels (the document object included), although it
# reads up to 1024; checks only run once a push has failed, so valid pushes pay nothing.
MAX_DOCUMENT_DEPTH = 254


def raise_if_too_deep(body: Any, primary_key: str) -> None:
    """A 422 naming every document of the push that is nested too deeply to store."""
    problems: list[dict[str, Any]] = []
    for index, row in enumerate(body if isinstance(body, list) else []):
        new = row.get("newDocumentState") if isinstance(row, dict) else None
        doc_id = new.get(primary_key) if isinstance(new, dict) else None
        found = []
        for field in ("newDocumentState", "assumedMasterState"):
            try:
                orjson.dumps(row.get(field) if isinstance(row, dict) else None)
            except orjson.JSONEncodeError:
                found.append(f"{field}: nested deeper than {MAX_DOCUMENT_DEPTH} levels")
        if found:
            problems.append({"id": doc_id if isinstance(doc_id, str) else f"row {index}",
                             "problems": found})
    if not problems:
        return
    listed = "; ".join(f"{p['id']!r}: {', '.join(p['problems'])}" for p in problems[:5])
    raise Unprocessable(
        f"{len(problems)} document(s) are nested deeper than {MAX_DOCUMENT_DEPTH} levels, "
        f"which syncd cannot store: {listed}. Flatten them.",
        code="document_too_deep",
        details=problems,
    )
