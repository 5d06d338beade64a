"""Sync parts: a large sync split into parts that several workers send in parallel (worker/split.py).

Revision ID: v7_sync_parts
Revises: v6_baseline
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "v7_sync_parts"
down_revision: str | None = "v6_baseline"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sync_parts",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("items", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "part"),
    )
    with op.batch_alter_table("sync_parts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sync_parts_mapping"), ["mapping"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sync_parts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_parts_mapping"))

    op.drop_table("sync_parts")
