"""Table definitions (SQLAlchemy Core: bulk upserts and set reads, no ORM identity map to fill)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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
    # v2: ingest batch that last wrote the row, and a row number fixed at first insert (snapshot.py);
    # indexed since v9_orders_row_no: the snapshot reads tied orders' ids by row number
    Column("ingest_seq", Integer, index=True),
    Column("row_no", Integer, index=True),
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
    #: v4: set when the person was erased: the row is owed a removal whatever the mapping's mode
    Column("erasure_id", Integer),
)

#: v4: write-ahead intents. A batch's identities are recorded here before it is sent and settled by
#: the destination's answer, so a batch applied but never recorded (worker killed) is still known
#: to be possibly held: acknowledged ∪ in-flight adds is what the destination may hold.
inflight = Table(
    "inflight",
    metadata,
    Column("mapping", String(128), primary_key=True),
    Column("identity", String(512), primary_key=True),
    Column("op", String(8), nullable=False),
    Column("customer_key", String(320), nullable=False),
    Column("run_id", Integer),
    Column("at", TS, nullable=False),
    Column("erasure_id", Integer),
)

#: v7: a large sync split into parts that several workers send in parallel: one row per part, its
#: state, counts and identities. The run row stays ``running`` until the last part settles.
sync_parts = Table(
    "sync_parts",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("mapping", String(128), nullable=False, index=True),
    Column("op", String(8), nullable=False),
    #: pending, done or failed
    Column("state", String(16), nullable=False),
    Column("size", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("counts", Text, nullable=False, default="{}"),
    Column("error", Text),
    Column("worker", String(128)),
    Column("started_at", TS),
    Column("finished_at", TS),
    #: the part's identities while it is owed: JSON [[identity, customer key, erasure id], ...] (one
    #: value per part, not a row per identity: 1M rows cost more to write and delete than the sends
    #: they describe); emptied when the part ends, and an erasure takes the person out at once
    Column("items", Text, nullable=False, default="[]"),
)

#: v4: per mapping, what a destination asked us to remember (e.g. the Mailchimp segment id it
#: created) and the fence: the run whose writes count; a run that lost it stops recording
mapping_state = Table(
    "mapping_state",
    metadata,
    Column("mapping", String(128), primary_key=True),
    Column("fence", Integer),
    Column("remembered", Text, nullable=False, default="{}"),
    #: v8: grows with every write of acknowledged or rejected rows outside a sync's plan (reconcile,
    #: a native replace, cleared rejections): a process planning incrementally then checks everyone
    Column("epoch", Integer, nullable=False, default=0, server_default="0"),
)

#: v4: syncs owed per mapping (a resync, a full replace, an erasure's removals). The store, not the
#: queue, says what is owed: a lost message leaves the row, and the next cycle runs it.
sync_requests = Table(
    "sync_requests",
    metadata,
    Column("mapping", String(128), primary_key=True),
    Column("full", Boolean, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("requested_at", TS, nullable=False),
    Column("task_id", String(64)),
    #: when the task was enqueued: a request whose message is older than the visibility bound was lost
    Column("sent_at", TS),
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

#: erasure audit: the hashed email only, never the address itself (``kind`` shop: the shop's domain hash)
erasures = Table(
    "erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email_sha256", String(64), nullable=False, index=True),
    Column("requested_at", TS, nullable=False),
    Column("completed_at", TS),
    Column("detail", Text, nullable=False, default="{}"),
    Column("kind", String(16), nullable=False, default="person"),  # v4
    Column("origin", String(32), nullable=False, default="cli"),  # v4: cli, api, webhook
)

#: v4: per erasure and mapping, how many identities were held when it was requested; the mapping is
#: complete when none of its acknowledged or in-flight rows carries the erasure any more
erasure_targets = Table(
    "erasure_targets",
    metadata,
    Column("erasure_id", Integer, primary_key=True),
    Column("mapping", String(128), primary_key=True),
    Column("held", Integer, nullable=False),
    Column("completed_at", TS),
)

#: v4: every Shopify webhook delivery seen, by ``X-Shopify-Webhook-Id`` (Shopify retries and may
#: deliver twice: a replay changes nothing)
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("webhook_id", String(128), primary_key=True),
    Column("topic", String(64), nullable=False),
    Column("received_at", TS, nullable=False),
    Column("outcome", String(200), nullable=False),
)

#: v4: customers/data_request and ``export-customer``: who asked (by hash), and when it was produced
data_requests = Table(
    "data_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email_sha256", String(64), nullable=False, index=True),
    Column("customer_ids", Text, nullable=False, default="[]"),
    Column("origin", String(32), nullable=False),
    Column("requested_at", TS, nullable=False),
    Column("exported_at", TS),
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


#: v8: the recompute change log, durable (worker/store/changes.py): per results version whether
#: its changes are recorded (a first write of everyone is not), and then which keys changed how. A
#: sync in another process than the recompute (Celery) replays these instead of rebuilding.
results_log = Table(
    "results_log",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("complete", Boolean, nullable=False),
    Column("at", TS, nullable=False),
)

results_log_keys = Table(
    "results_log_keys",
    metadata,
    Column("version", Integer, primary_key=True),
    #: the customer key ('' for a dropped segment)
    Column("customer_key", String(320), primary_key=True),
    #: '' for a profile change
    Column("segment", String(128), primary_key=True),
    #: profile, gone, join, leave, stale
    Column("change", String(8), nullable=False),
)
#: v5: per recompute and segment: size, change, revenue share and overlaps (the marketer's pages
#: and the preview read these, never a recompute on request)
segment_history = Table(
    "segment_history",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("segment", String(128), primary_key=True),
    Column("at", TS, nullable=False, index=True),
    Column("size", Integer, nullable=False),
    Column("joined", Integer, nullable=False),
    Column("left", Integer, nullable=False),
    Column("revenue_share", Float, nullable=False),
    #: {"other segment": jaccard} for overlaps of at least 1%
    Column("overlaps", Text, nullable=False, default="{}"),
)

#: v5: browser sessions of the marketer's web app (the cookie holds only the random id)
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
)


#: v6: a source's bulk export of one stream (Shopify ``bulkOperationRunQuery``) and how far the worker
#: got with it, so a killed worker resumes where its last stored chunk ended
bulk_operations = Table(
    "bulk_operations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("stream", String(32), nullable=False),
    Column("operation_id", String(128)),
    #: the source's status of the operation (CREATED, RUNNING, COMPLETED, FAILED, CANCELED, EXPIRED)
    Column("status", String(16), nullable=False),
    #: ours: starting, running, downloading, ingesting, merging, done, fell_back, abandoned
    Column("phase", String(16), nullable=False, index=True),
    #: when the source began the export: incremental paging starts here minus the overlap
    Column("exported_from", TS),
    Column("started_at", TS, nullable=False),
    Column("url", Text),
    Column("url_received_at", TS),
    Column("partial", Boolean, nullable=False, default=False),
    Column("file_size", BigInteger),
    Column("downloaded", BigInteger, nullable=False, default=0),
    #: bytes of the file whose records are stored (the next chunk starts here)
    Column("ingested", BigInteger, nullable=False, default=0),
    Column("object_count", BigInteger, nullable=False, default=0),
    Column("counts", Text, nullable=False, default="{}"),
    Column("error", Text),
    Column("finished_at", TS),
)

#: v6: child rows (order line items) of a bulk export, held until the whole file is read: children
#: may come before or after their parent and are attached to their orders in one step at the end
bulk_lines = Table(
    "bulk_lines",
    metadata,
    Column("operation", Integer, primary_key=True),
    Column("line_key", String(128), primary_key=True),
    Column("parent_id", String(128), nullable=False, index=True),
    Column("product_id", String(128)),
    Column("sku", String(128)),
    Column("quantity", Integer, nullable=False),
)

#: v6: store webhooks (orders/*, customers/*) kept durably the moment they arrive and processed
#: after the answer; the payload is cleared once processed (it holds PII), the row stays as a record
webhook_inbox = Table(
    "webhook_inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", String(128), nullable=False, unique=True),
    Column("topic", String(64), nullable=False),
    Column("received_at", TS, nullable=False, index=True),
    Column("payload", Text),
    #: who it is about, so an erasure can drop a payload that is not processed yet
    Column("email_sha256", String(64), index=True),
    Column("customer_id", String(128), index=True),
    Column("processed_at", TS, index=True),
    Column("outcome", String(200)),
)

#: v6: a source's OAuth tokens that rotate (Shopify expiring offline tokens), encrypted at rest
source_credentials = Table(
    "source_credentials",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("access_token", Text, nullable=False),
    Column("refresh_token", Text),
    Column("expires_at", TS),
    Column("refresh_expires_at", TS),
    Column("updated_at", TS, nullable=False),
    #: the last refresh failure, in words (never a token)
    Column("problem", Text),
)
