"""Versioned schema migrations, applied by the program itself at start-up.

Each migration is a function of a connection; ``schema_version`` records the highest applied.
New versions append to :data:`MIGRATIONS` and never edit an old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, bindparam, inspect, select, text, update

from worker.store import schema

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock (run one process first)
    fcntl = None  # type: ignore[assignment]

Migration = Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    tables = [t for name, t in schema.metadata.tables.items() if name != "schema_version"]
    schema.metadata.create_all(conn, tables=tables)


def _v2_ingest_seq(conn: Connection) -> None:
    """Ingest sequence and row numbers on orders/customers, and the counter row (snapshot refresh)."""
    # v1 creates tables from the current metadata, so on a new database the columns already exist
    for table in (schema.orders, schema.customers):
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for name in ("ingest_seq", "row_no"):
            if name not in present:
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} INTEGER"))
        indexes = {i["name"] for i in inspect(conn).get_indexes(table.name)}
        index_name = f"ix_{table.name}_ingest_seq"
        if index_name not in indexes:
            conn.execute(text(f"CREATE INDEX {index_name} ON {table.name} (ingest_seq)"))
    schema.ingest_state.create(conn, checkfirst=True)
    if conn.execute(select(schema.ingest_state.c.id)).first() is None:
        conn.execute(
            schema.ingest_state.insert().values(id=1, seq=1, next_row=1, generation=1, instance=uuid.uuid4().hex)
        )
    # rows written before v2 form batch 1, numbered in key order
    for table, key in ((schema.orders, "order_id"), (schema.customers, "customer_id")):
        ids = conn.execute(select(table.c[key]).where(table.c.row_no.is_(None)).order_by(table.c[key])).scalars()
        start = int(conn.execute(select(schema.ingest_state.c.next_row)).scalar_one())
        rows = [{"k": k, "n": start + i} for i, k in enumerate(ids)]
        if rows:
            conn.execute(
                update(table).where(table.c[key] == bindparam("k")).values(row_no=bindparam("n"), ingest_seq=1),
                rows,
            )
            conn.execute(update(schema.ingest_state).values(next_row=start + len(rows)))


def _v3_results_state(conn: Connection) -> None:
    """Write counter of profiles/segment_members (incremental persistence of recompute results)."""
    schema.results_state.create(conn, checkfirst=True)
    if conn.execute(select(schema.results_state.c.id)).first() is None:
        conn.execute(schema.results_state.insert().values(id=1, version=1))


def _add_missing_columns(conn: Connection, table_name: str, columns: dict[str, str]) -> None:
    """``ALTER TABLE … ADD COLUMN`` for each of ``columns`` (name → SQL type and default) not there yet."""
    present = {c["name"] for c in inspect(conn).get_columns(table_name)}
    for name, ddl in columns.items():
        if name not in present:
            conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {name} {ddl}"))


def _v4_intents_and_privacy(conn: Connection) -> None:
    """Write-ahead intents, fences, owed syncs; erasure progress, webhook dedup, data requests."""
    _add_missing_columns(conn, "acknowledged", {"erasure_id": "INTEGER"})
    _add_missing_columns(
        conn,
        "erasures",
        {"kind": "VARCHAR(16) NOT NULL DEFAULT 'person'", "origin": "VARCHAR(32) NOT NULL DEFAULT 'cli'"},
    )
    for table in (
        schema.inflight,
        schema.mapping_state,
        schema.sync_requests,
        schema.erasure_targets,
        schema.webhook_deliveries,
        schema.data_requests,
    ):
        table.create(conn, checkfirst=True)
    # an erasure recorded before v4 kept its customer keys (raw emails for guests) in ``detail``: keep
    # only the customer ids and counts, which is all the audit needs
    for row in conn.execute(select(schema.erasures.c.id, schema.erasures.c.detail)).all():
        detail = json.loads(row.detail or "{}")
        if "keys" in detail:
            detail.pop("keys")
            conn.execute(
                update(schema.erasures).where(schema.erasures.c.id == row.id).values(detail=json.dumps(detail))
            )


def _v5_history_and_sessions(conn: Connection) -> None:
    """Segment size history with its statistics, and browser sessions of the web app."""
    schema.segment_history.create(conn, checkfirst=True)
    schema.web_sessions.create(conn, checkfirst=True)


def _v6_bulk_webhooks_tokens(conn: Connection) -> None:
    """Bulk exports and their staged children, the store-webhook inbox, rotating source tokens."""
    for table in (schema.bulk_operations, schema.bulk_lines, schema.webhook_inbox, schema.source_credentials):
        table.create(conn, checkfirst=True)


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "initial schema", _v1_initial),
    (2, "ingest sequence and row numbers for the columnar snapshot", _v2_ingest_seq),
    (3, "write counter of recompute results", _v3_results_state),
    (4, "write-ahead intents, fences, owed syncs, erasure progress, webhook dedup", _v4_intents_and_privacy),
    (5, "segment size history and web sessions", _v5_history_and_sessions),
    (6, "bulk exports, webhook inbox, rotating source tokens", _v6_bulk_webhooks_tokens),
]

LATEST = MIGRATIONS[-1][0]
#: PostgreSQL advisory lock held while migrating (an arbitrary constant: "audsync" in ASCII)
MIGRATION_LOCK_KEY = 0x61756473796E63


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(select(schema.schema_version.c.version)).scalar()
    return int(value or 0)


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """SQLite runs DDL outside a transaction here, so two processes opening a new database file at
    once would both create its tables: the second waits on a lock file beside the database."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or fcntl is None:
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrating")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def migrate(engine: Engine) -> int:
    """Bring the database to :data:`LATEST`; returns the version found before."""
    with _sqlite_file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # two workers starting together must not both migrate: the second waits, then finds it done
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        schema.schema_version.create(conn, checkfirst=True)
        before = current_version(conn)
        if before > LATEST:
            raise RuntimeError(
                f"database schema version {before} is newer than this program ({LATEST}): upgrade audience-sync"
            )
        for version, _title, apply in MIGRATIONS:
            if version > before:
                apply(conn)
        if before == 0:
            conn.execute(schema.schema_version.insert().values(version=LATEST))
        elif before < LATEST:
            conn.execute(schema.schema_version.update().values(version=LATEST))
    return before
