"""syncd_nodes: each running node's heartbeat, for the admin page (/admin).

A small table of one row per node (each worker is a node), rewritten every few seconds by its
node and deleted when it stops; no index besides the key (it holds a handful of rows).

Revision ID: 0003_nodes
Revises: 0002_tombstones
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_nodes"
down_revision: str | None = "0002_tombstones"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "syncd_nodes",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_seconds", sa.Double(), nullable=False),
        sa.Column("subscribers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("pushed", sa.BigInteger(), nullable=False),
        sa.Column("pulled", sa.BigInteger(), nullable=False),
        sa.Column("conflicts", sa.BigInteger(), nullable=False),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_syncd_nodes")),
    )


def downgrade() -> None:
    op.drop_table("syncd_nodes")
