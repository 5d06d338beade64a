"""What every group of store queries shares: the engine, dialect upserts, UTC helpers, chunking."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause

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
        #: values per ``_among`` search: one array on PostgreSQL, SQLite's bound-parameter limit elsewhere
        self.in_chunk = 50_000 if self.dialect == "postgresql" else CHUNK

    def _among(self, column: ColumnClause[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """``column IN values``: on PostgreSQL one array parameter (``= ANY``), which costs the same
        for 10,000 values as for 10, where an expanded ``IN`` list is parsed and bound one by one."""
        if self.dialect == "postgresql":
            array = postgresql.ARRAY(column.type)
            return column == any_(bindparam(None, list(values), type_=array, expanding=False))
        return column.in_(list(values))

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
        if self.dialect == "postgresql" and len(rows) > 50:
            self._upsert_arrays(conn, table, rows, keys, keep)
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

    def _upsert_arrays(
        self,
        conn: Connection,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        keys: list[str],
        keep: tuple[str, ...],
    ) -> None:
        """PostgreSQL: one ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT`` per 50,000 rows, a
        column per array (a row per value costs a round of the pipeline each). A key given twice
        keeps its last row, as one statement per row would."""
        columns = list(rows[0].keys())
        last = {tuple(r[k] for k in keys): r for r in rows}
        ordered = list(last.values())
        dialect = conn.dialect
        arrays = ", ".join(f"CAST(%({c})s AS {table.c[c].type.compile(dialect=dialect)}[])" for c in columns)
        updates = [c for c in columns if c not in keys and c not in keep]
        action = "DO UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in updates) if updates else "DO NOTHING"
        names = ", ".join(f'"{c}"' for c in columns)
        conflict = ", ".join(f'"{k}"' for k in keys)
        sql = f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT ({conflict}) {action}'
        for chunk in chunks(ordered, 50_000):
            conn.exec_driver_sql(sql, {c: [r[c] for r in chunk] for c in columns})

    def _insert_ignore(self, conn: Connection, table: Table, row: Mapping[str, Any], keys: list[str]) -> bool:
        """Insert ``row`` unless its key exists; True when it was inserted."""
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = insert(table).values(**row).on_conflict_do_nothing(index_elements=keys)
        # RETURNING tells inserted from skipped on every driver (psycopg reports rowcount -1 here)
        return conn.execute(statement.returning(table.c[keys[0]])).first() is not None
