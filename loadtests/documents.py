"""The documents every benchmark in loadtests/ writes: about 1 KB, shaped like an RxDB app's.

The JSON schema beside this file (``bench_schema.json``) describes them; syncd's benchmark
collection and the peer RxDB server are both declared from it, so the same rows go to both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("bench_schema.json")
_BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua. ") * 7  # ~840 characters


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def document(doc_id: str, version: int = 0) -> dict[str, Any]:
    """A ~1 KB document; ``version`` changes its content so that an update is a real change."""
    return {
        "id": doc_id,
        "title": f"document {doc_id} version {version}",
        "body": _BODY,
        "done": version % 2 == 1,
        "priority": version % 10,
        "tags": ["bench", "rxdb", f"v{version % 5}"],
        "owner": "bench",
        "updatedAt": int(time.time() * 1000),
    }


def insert_rows(prefix: str, start: int, count: int) -> list[dict[str, Any]]:
    """Push rows that create ``count`` new documents (assumedMasterState absent)."""
    return [{"newDocumentState": document(f"{prefix}{i:09d}")} for i in range(start, start + count)]
