"""The durable recompute change log (results_log, results_log_keys) and mapping_state.epoch.

Revision ID: v8_results_log
Revises: v7_sync_parts
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "v8_results_log"
down_revision: str | None = "v7_sync_parts"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "results_log",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "results_log_keys",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("customer_key", sa.String(length=320), nullable=False),
        sa.Column("segment", sa.String(length=128), nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("version", "customer_key", "segment"),
    )
    with op.batch_alter_table("mapping_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("mapping_state", schema=None) as batch_op:
        batch_op.drop_column("epoch")

    op.drop_table("results_log_keys")
    op.drop_table("results_log")
