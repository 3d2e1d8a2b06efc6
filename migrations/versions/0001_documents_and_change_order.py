"""Collections, documents, and the trigger that stamps each row version's change order.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from syncd.db.models import Xid8

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ordering key is (xid, seq): the writing transaction's id and a sequence for the order inside
# it. Pulls serve only rows below the oldest running transaction (pg_snapshot_xmin), so a
# transaction that took its key early and commits late can never be skipped (docs/ordering.md).
# The trigger also keeps the `deleted` column and the document's `_deleted` flag in step, in
# whichever of the two a plain-SQL writer chose to set.
STAMP_FUNCTION = """
CREATE FUNCTION syncd_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.xid := pg_current_xact_id();
    NEW.seq := nextval('syncd_change_seq');
    IF TG_OP = 'UPDATE' AND NEW.deleted IS DISTINCT FROM OLD.deleted
       AND (NEW.data -> '_deleted') IS NOT DISTINCT FROM (OLD.data -> '_deleted') THEN
        NEW.data := jsonb_set(NEW.data, '{_deleted}', to_jsonb(NEW.deleted));
    ELSIF NEW.data ? '_deleted' THEN
        IF jsonb_typeof(NEW.data -> '_deleted') <> 'boolean' THEN
            RAISE EXCEPTION 'syncd: _deleted must be a JSON boolean, got %', NEW.data -> '_deleted'
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.deleted := (NEW.data ->> '_deleted')::boolean;
    ELSE
        NEW.data := NEW.data || jsonb_build_object('_deleted', coalesce(NEW.deleted, false));
        NEW.deleted := coalesce(NEW.deleted, false);
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "syncd_collections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("primary_key", sa.String(length=128), nullable=False),
        sa.Column("schema", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("access_rule", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_syncd_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_syncd_collections_name")),
    )
    op.execute("CREATE SEQUENCE syncd_change_seq AS bigint")
    op.create_table(
        "syncd_documents",
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column(
            "partition", sa.Text(collation="C"), server_default=sa.text("''"), nullable=False
        ),
        sa.Column("id", sa.Text(collation="C"), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("xid", Xid8(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["syncd_collections.id"],
            name=op.f("fk_syncd_documents_collection_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("collection_id", "partition", "id", name="pk_syncd_documents"),
    )
    op.create_index(
        "ix_syncd_documents_changes",
        "syncd_documents",
        ["collection_id", "partition", "xid", "seq"],
    )
    op.execute(STAMP_FUNCTION)
    op.execute(
        "CREATE TRIGGER syncd_documents_stamp BEFORE INSERT OR UPDATE ON syncd_documents "
        "FOR EACH ROW EXECUTE FUNCTION syncd_stamp_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER syncd_documents_stamp ON syncd_documents")
    op.execute("DROP FUNCTION syncd_stamp_change()")
    op.drop_index("ix_syncd_documents_changes", table_name="syncd_documents")
    op.drop_table("syncd_documents")
    op.execute("DROP SEQUENCE syncd_change_seq")
    op.drop_table("syncd_collections")
