"""The store: every group of queries over one engine, and :func:`open_store`.

Every write that matters for correctness is its own transaction. Statement parameters are never
put into error messages (``hide_parameters``): they hold emails, and errors end up in run rows and logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event

from worker.store.base import as_utc, utcnow
from worker.store.bulk import BulkQueries
from worker.store.inbox import InboxQueries
from worker.store.membership import FenceLost, InFlight, Marked, MembershipQueries, SyncRequest
from worker.store.migrations import migrate
from worker.store.parts import PartQueries
from worker.store.privacy import ErasureProgress, ErasureRequest, PrivacyQueries, Webhook
from worker.store.results import ResultsQueries
from worker.store.runs import RunQueries, RunRow
from worker.store.source_data import SourceDataQueries


class Store(
    InboxQueries,
    BulkQueries,
    SourceDataQueries,
    ResultsQueries,
    PartQueries,
    MembershipQueries,
    PrivacyQueries,
    RunQueries,
):
    def dispose(self) -> None:
        self.engine.dispose()

    def flush_deleted(self) -> None:
        """After an erasure: on SQLite, fold the write-ahead log into the database file and truncate it,
        so the old page images holding the person are gone from the disk too."""
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # deleted rows are overwritten, not left in free pages: an erased person leaves no bytes behind
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite creates it with the umask
    (SQLite gives its -wal and -shm files the database file's permissions)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def open_store(url: str) -> Store:
    """Connect, create the SQLite file (owner-only) if needed, and migrate the schema to the latest version."""
    path = sqlite_path(url)
    if path is not None:
        _private_file(path)
    engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return Store(engine)


__all__ = [
    "ErasureProgress",
    "ErasureRequest",
    "FenceLost",
    "InFlight",
    "Marked",
    "RunRow",
    "Store",
    "SyncRequest",
    "Webhook",
    "as_utc",
    "open_store",
    "utcnow",
]
