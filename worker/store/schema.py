"""Table definitions (SQLAlchemy Core: bulk upserts and set reads, no ORM identity map to fill)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

TS = DateTime(timezone=True)

schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("email", String(320), index=True),
    Column("phone", String(32)),
    Column("first_name", String(128)),
    Column("last_name", String(128)),
    Column("country", String(8)),
    Column("email_consent", String(16), nullable=False),
    Column("consent_updated_at", TS),
    Column("last_engaged_at", TS),
    Column("updated_at", TS, nullable=False),
    Column("ingest_seq", Integer, index=True),  # v2, as on orders
    Column("row_no", Integer),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(128), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("customer_id", String(128), index=True),
    Column("email", String(320), index=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("total", Float, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("cancelled", Boolean, nullable=False),
    Column("test", Boolean, nullable=False),
    Column("has_discount", Boolean, nullable=False),
    Column("channel", String(200)),
    Column("landing_page", Text),
    Column("referrer", Text),
    Column("accepts_marketing", Boolean),
    # v2: ingest batch that last wrote the row, and a row number fixed at first insert (snapshot.py)
    Column("ingest_seq", Integer, index=True),
    Column("row_no", Integer),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(128), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("product_id", String(128)),
    Column("sku", String(128)),
    Column("quantity", Integer, nullable=False),
)

watermarks = Table(
    "watermarks",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("stream", String(32), primary_key=True),
    Column("value", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

#: who each customer key is, as the last recompute resolved it (guests merged by email)
profiles = Table(
    "profiles",
    metadata,
    Column("customer_key", String(320), primary_key=True),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("first_name", String(128)),
    Column("last_name", String(128)),
    Column("country", String(8)),
    Column("email_consent", String(16), nullable=False),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("segment", String(128), primary_key=True),
    Column("customer_key", String(320), primary_key=True),
)

#: per mapping, exactly the identities the destination has accepted
acknowledged = Table(
    "acknowledged",
    metadata,
    Column("mapping", String(128), primary_key=True),
    Column("identity", String(512), primary_key=True),
    Column("customer_key", String(320), nullable=False),
    Column("acked_at", TS, nullable=False),
)

rejected = Table(
    "rejected",
    metadata,
    Column("mapping", String(128), primary_key=True),
    Column("identity", String(512), primary_key=True),
    Column("customer_key", String(320), nullable=False),
    Column("operation", String(8), nullable=False),
    Column("code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("run_id", Integer),
    Column("at", TS, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("mapping", String(128), index=True),
    Column("task_id", String(64)),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("status", String(24), nullable=False),
    Column("counts", Text, nullable=False, default="{}"),
    Column("error", Text),
)

problems = Table(
    "problems",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, index=True),
    Column("source", String(32), nullable=False),
    Column("ref", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", TS, nullable=False),
)

#: mapping pauses ("not before") when a destination asked for a wait longer than a task may sleep
pauses = Table(
    "pauses",
    metadata,
    Column("mapping", String(128), primary_key=True),
    Column("not_before", TS, nullable=False),
    Column("reason", Text, nullable=False),
)

#: erasure audit: the hashed email only, never the address itself
erasures = Table(
    "erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email_sha256", String(64), nullable=False, index=True),
    Column("requested_at", TS, nullable=False),
    Column("completed_at", TS),
    Column("detail", Text, nullable=False, default="{}"),
)

#: v2: counters of the columnar snapshot. ``seq`` grows with every order/customer write batch,
#: ``next_row`` hands out row numbers, ``generation`` grows when rows are deleted (snapshots reload).
ingest_state = Table(
    "ingest_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("next_row", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("instance", String(32), nullable=False),  # random per database: a cache names its source
)

#: v3: ``version`` grows with every write to ``profiles`` / ``segment_members``; a process that kept
#: the state it last wrote (worker/store/persist.py) trusts it only if nobody wrote since.
results_state = Table(
    "results_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)
