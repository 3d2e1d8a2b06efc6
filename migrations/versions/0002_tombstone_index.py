"""An index of tombstones for `syncd purge`: (collection_id, updated_at) WHERE deleted.

Without it each purge batch scanned the whole documents table for old tombstones. Partial, so
it holds only tombstones (live documents cost it nothing) and is maintained only when a document
is deleted or a tombstone rewritten. Chosen by EXPLAIN (ANALYZE) of store.PURGE_SQL on 200k rows
in 4 collections, 5 % tombstones, custom and generic plans: with ``--collection`` this index is
one range (collection, age) and reads only that collection's tombstones (2,500 rows, 17 ms per
batch), where ``(updated_at) WHERE deleted`` read every collection's old tombstones and filtered
them (10,000 rows, 35-45 ms); without ``--collection`` both read the tombstones alone (a bitmap
scan of this index on updated_at). Without an index every batch was a Seq Scan of the table.
tests/integration/test_purge.py checks the plans.

Built CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would block every
push for as long as it runs on a large table. A build that failed half-way leaves an invalid
index behind, so it is dropped first.

Revision ID: 0002_tombstones
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_tombstones"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_syncd_documents_tombstones"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {INDEX} ON syncd_documents (collection_id, updated_at) "
            "WHERE deleted"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
