"""syncd_moves: move-out records for partial replication (docs/partial-sync.md).

A row is written by a collection's own ``AFTER UPDATE`` trigger (created by ``syncd collections
add`` when its access rule declares ``filters``) whenever a declared field of a document changed:
it holds the declared fields' old values at the new version's ``(xid, seq)``, so it commits with
the change and the pull horizon keeps it gap-free. This migration creates the table and the
trigger function; the per-collection triggers and indexes are made by syncd/db/filtering.py.

Revision ID: 0004_moves
Revises: 0003_nodes
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from syncd.db.models import Xid8

revision: str = "0004_moves"
down_revision: str | None = "0003_nodes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# TG_ARGV holds the collection's declared fields. NEW's xid and seq were set by the BEFORE
# trigger (syncd_stamp_change), so the record sits at the position of the version it explains.
RECORD_MOVE_FUNCTION = """
CREATE FUNCTION syncd_record_move() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_values jsonb := '{}'::jsonb;
    field text;
BEGIN
    FOREACH field IN ARRAY TG_ARGV LOOP
        old_values := old_values || jsonb_build_object(field, OLD.data -> field);
    END LOOP;
    INSERT INTO syncd_moves (collection_id, partition, id, xid, seq, old)
    VALUES (OLD.collection_id, OLD.partition, OLD.id, NEW.xid, NEW.seq, old_values);
    RETURN NULL;
END
$$
"""

# What filtering.py creates per collection, found by name for the downgrade.
DROP_FILTER_OBJECTS = """
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT indexname FROM pg_indexes
                WHERE tablename = 'syncd_documents' AND indexname LIKE 'syncd\\_f\\_%'
    LOOP
        EXECUTE format('DROP INDEX %I', name);
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "syncd_moves",
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("partition", sa.Text(collation="C"), nullable=False),
        sa.Column("id", sa.Text(collation="C"), nullable=False),
        sa.Column("xid", Xid8(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("old", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "moved_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["syncd_collections.id"],
            name=op.f("fk_syncd_moves_collection_id"),
            ondelete="CASCADE",
        ),
        # In change order: what a node's live feeds read the partition's move-outs with.
        sa.PrimaryKeyConstraint("collection_id", "partition", "xid", "seq",
                                name="pk_syncd_moves"),
    )
    # What `syncd purge` finds expired move-out records with.
    op.create_index("ix_syncd_moves_moved_at", "syncd_moves", ["moved_at"])
    op.execute(RECORD_MOVE_FUNCTION)


def downgrade() -> None:
    # CASCADE: the per-collection triggers that call it go with it.
    op.execute("DROP FUNCTION syncd_record_move() CASCADE")
    op.execute(DROP_FILTER_OBJECTS)
    op.drop_index("ix_syncd_moves_moved_at", table_name="syncd_moves")
    op.drop_table("syncd_moves")
    # Older syncd refuses access rules with keys it does not know.
    op.execute("UPDATE syncd_collections SET access_rule = access_rule - 'filters' "
               "WHERE access_rule ? 'filters'")
