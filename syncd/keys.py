"""How long a document id and a partition may be: what PostgreSQL's primary key index can hold.

Rows are keyed by ``(collection_id, partition, id)``, and a btree index entry may hold at most
2704 bytes (a third of an 8 KiB page, less the page's overhead). An entry of that key is an
8-byte header, the 16-byte uuid, then the two texts, each with a header of up to 4 bytes and up
to 3 bytes of alignment before it, and the whole is padded to a multiple of 8: at most
35 + 7 bytes besides the texts, so partition and id together may hold 2704 - 42 = 2662 bytes of
UTF-8. (PostgreSQL compresses long entries, but random ids do not compress, so only the
uncompressed size is safe.) The change index ``(collection_id, partition, xid, seq)`` holds the
partition only and is smaller. Fixed shares keep an id valid whoever pushes it, and leave room:
"""

from __future__ import annotations

MAX_PARTITION_BYTES = 512
MAX_ID_BYTES = 2048


def bytes_over(text: str, limit: int) -> int | None:
    """The UTF-8 length of ``text`` (what PostgreSQL stores) when it exceeds ``limit``, else
    None. Text of at most ``limit / 4`` characters is not encoded: it cannot exceed it."""
    if len(text) * 4 <= limit:
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None
