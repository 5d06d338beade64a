"""What every group of store queries shares: the engine, dialect upserts, UTC helpers, chunking."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

CHUNK = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def chunks(rows: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class StoreBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def _upsert(
        self,
        conn: Connection,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        keys: list[str],
        keep: tuple[str, ...] = (),
    ) -> None:
        """Insert or update by ``keys``; columns in ``keep`` are written on insert only."""
        if not rows:
            return
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        columns = list(rows[0].keys())
        # one single-row statement run as executemany: compiled once and cached, where a
        # multi-VALUES statement would be compiled afresh for every chunk (seconds at 50k rows)
        stmt = insert(table)
        updates = {c: stmt.excluded[c] for c in columns if c not in keys and c not in keep}
        stmt = (
            stmt.on_conflict_do_update(index_elements=keys, set_=updates)
            if updates
            else stmt.on_conflict_do_nothing(index_elements=keys)
        )
        for chunk in chunks(rows, 10_000):
            conn.execute(stmt, list(chunk))

    def _insert_ignore(self, conn: Connection, table: Table, row: Mapping[str, Any], keys: list[str]) -> bool:
        """Insert ``row`` unless its key exists; True when it was inserted."""
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = insert(table).values(**row).on_conflict_do_nothing(index_elements=keys)
        # RETURNING tells inserted from skipped on every driver (psycopg reports rowcount -1 here)
        return conn.execute(statement.returning(table.c[keys[0]])).first() is not None
