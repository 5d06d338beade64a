"""An index on orders.row_no: the snapshot reads the ids of orders that tie by row number.

Revision ID: v9_orders_row_no
Revises: v8_results_log
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision: str = "v9_orders_row_no"
down_revision: str | None = "v8_results_log"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_orders_row_no", "orders", ["row_no"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_orders_row_no", table_name="orders")
