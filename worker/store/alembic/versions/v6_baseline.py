"""Baseline: the schema exactly as hand-written version 6 left it (worker/store/migrations.py).

A database the hand-written migrations brought to version 6 is stamped at this revision, not
changed. Frozen: later changes are new revisions. The legacy path creates a table an older database
lacks with the same function as here (:data:`TABLES`), so both paths build the same tables.

Revision ID: v6_baseline
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision: str = "v6_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _acknowledged() -> None:
    op.create_table(
        "acknowledged",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("customer_key", sa.String(length=320), nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erasure_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("mapping", "identity"),
    )


def _bulk_lines() -> None:
    op.create_table(
        "bulk_lines",
        sa.Column("operation", sa.Integer(), nullable=False),
        sa.Column("line_key", sa.String(length=128), nullable=False),
        sa.Column("parent_id", sa.String(length=128), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=True),
        sa.Column("sku", sa.String(length=128), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("operation", "line_key"),
    )
    op.create_index("ix_bulk_lines_parent_id", "bulk_lines", ["parent_id"])


def _bulk_operations() -> None:
    op.create_table(
        "bulk_operations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("operation_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("exported_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("url_received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("partial", sa.Boolean(), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("downloaded", sa.BigInteger(), nullable=False),
        sa.Column("ingested", sa.BigInteger(), nullable=False),
        sa.Column("object_count", sa.BigInteger(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bulk_operations_phase", "bulk_operations", ["phase"])


def _customers() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("first_name", sa.String(length=128), nullable=True),
        sa.Column("last_name", sa.String(length=128), nullable=True),
        sa.Column("country", sa.String(length=8), nullable=True),
        sa.Column("email_consent", sa.String(length=16), nullable=False),
        sa.Column("consent_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_engaged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingest_seq", sa.Integer(), nullable=True),
        sa.Column("row_no", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    op.create_index("ix_customers_email", "customers", ["email"])
    op.create_index("ix_customers_ingest_seq", "customers", ["ingest_seq"])


def _data_requests() -> None:
    op.create_table(
        "data_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email_sha256", sa.String(length=64), nullable=False),
        sa.Column("customer_ids", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_data_requests_email_sha256", "data_requests", ["email_sha256"])


def _erasure_targets() -> None:
    op.create_table(
        "erasure_targets",
        sa.Column("erasure_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("erasure_id", "mapping"),
    )


def _erasures() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email_sha256", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_erasures_email_sha256", "erasures", ["email_sha256"])


def _inflight() -> None:
    op.create_table(
        "inflight",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("customer_key", sa.String(length=320), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erasure_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("mapping", "identity"),
    )


def _ingest_state() -> None:
    op.create_table(
        "ingest_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("next_row", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def _mapping_state() -> None:
    op.create_table(
        "mapping_state",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("fence", sa.Integer(), nullable=True),
        sa.Column("remembered", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mapping"),
    )


def _order_lines() -> None:
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=True),
        sa.Column("sku", sa.String(length=128), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line_no"),
    )


def _orders() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("has_discount", sa.Boolean(), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=True),
        sa.Column("landing_page", sa.Text(), nullable=True),
        sa.Column("referrer", sa.Text(), nullable=True),
        sa.Column("accepts_marketing", sa.Boolean(), nullable=True),
        sa.Column("ingest_seq", sa.Integer(), nullable=True),
        sa.Column("row_no", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])
    op.create_index("ix_orders_email", "orders", ["email"])
    op.create_index("ix_orders_ingest_seq", "orders", ["ingest_seq"])


def _pauses() -> None:
    op.create_table(
        "pauses",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mapping"),
    )


def _problems() -> None:
    op.create_table(
        "problems",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_problems_run_id", "problems", ["run_id"])


def _profiles() -> None:
    op.create_table(
        "profiles",
        sa.Column("customer_key", sa.String(length=320), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("first_name", sa.String(length=128), nullable=True),
        sa.Column("last_name", sa.String(length=128), nullable=True),
        sa.Column("country", sa.String(length=8), nullable=True),
        sa.Column("email_consent", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("customer_key"),
    )


def _rejected() -> None:
    op.create_table(
        "rejected",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("customer_key", sa.String(length=320), nullable=False),
        sa.Column("operation", sa.String(length=8), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mapping", "identity"),
    )


def _results_state() -> None:
    op.create_table(
        "results_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def _runs() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("mapping", sa.String(length=128), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runs_mapping", "runs", ["mapping"])


def _schema_version() -> None:
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )


def _segment_history() -> None:
    op.create_table(
        "segment_history",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("joined", sa.Integer(), nullable=False),
        sa.Column("left", sa.Integer(), nullable=False),
        sa.Column("revenue_share", sa.Float(), nullable=False),
        sa.Column("overlaps", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "segment"),
    )
    op.create_index("ix_segment_history_at", "segment_history", ["at"])


def _segment_members() -> None:
    op.create_table(
        "segment_members",
        sa.Column("segment", sa.String(length=128), nullable=False),
        sa.Column("customer_key", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("segment", "customer_key"),
    )


def _source_credentials() -> None:
    op.create_table(
        "source_credentials",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("source"),
    )


def _sync_requests() -> None:
    op.create_table(
        "sync_requests",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("mapping"),
    )


def _watermarks() -> None:
    op.create_table(
        "watermarks",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("value", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "stream"),
    )


def _web_sessions() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_sha256"),
    )


def _webhook_deliveries() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id"),
    )


def _webhook_inbox() -> None:
    op.create_table(
        "webhook_inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("email_sha256", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook_id"),
    )
    op.create_index("ix_webhook_inbox_customer_id", "webhook_inbox", ["customer_id"])
    op.create_index("ix_webhook_inbox_email_sha256", "webhook_inbox", ["email_sha256"])
    op.create_index("ix_webhook_inbox_processed_at", "webhook_inbox", ["processed_at"])
    op.create_index("ix_webhook_inbox_received_at", "webhook_inbox", ["received_at"])


#: every table of version 6 and the function creating it (with its indexes)
TABLES: dict[str, Callable[[], None]] = {
    "acknowledged": _acknowledged,
    "bulk_lines": _bulk_lines,
    "bulk_operations": _bulk_operations,
    "customers": _customers,
    "data_requests": _data_requests,
    "erasure_targets": _erasure_targets,
    "erasures": _erasures,
    "inflight": _inflight,
    "ingest_state": _ingest_state,
    "mapping_state": _mapping_state,
    "order_lines": _order_lines,
    "orders": _orders,
    "pauses": _pauses,
    "problems": _problems,
    "profiles": _profiles,
    "rejected": _rejected,
    "results_state": _results_state,
    "runs": _runs,
    "schema_version": _schema_version,
    "segment_history": _segment_history,
    "segment_members": _segment_members,
    "source_credentials": _source_credentials,
    "sync_requests": _sync_requests,
    "watermarks": _watermarks,
    "web_sessions": _web_sessions,
    "webhook_deliveries": _webhook_deliveries,
    "webhook_inbox": _webhook_inbox,
}


def seed_rows() -> None:
    """The counter rows every version-6 database has (hand-written v2, v3) and its version number."""
    op.bulk_insert(
        sa.table("ingest_state", *(sa.column(c) for c in ("id", "seq", "next_row", "generation", "instance"))),
        [{"id": 1, "seq": 1, "next_row": 1, "generation": 1, "instance": uuid.uuid4().hex}],
    )
    op.bulk_insert(sa.table("results_state", sa.column("id"), sa.column("version")), [{"id": 1, "version": 1}])
    op.bulk_insert(sa.table("schema_version", sa.column("version")), [{"version": 6}])


def upgrade() -> None:
    for create in TABLES.values():
        create()
    seed_rows()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
