"""Versioned schema migrations, applied by the program itself at start-up.

Each migration is a function of a connection; ``schema_version`` records the highest applied.
New versions append to :data:`MIGRATIONS` and never edit an old one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, select

from worker.store import schema

Migration = Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    tables = [t for name, t in schema.metadata.tables.items() if name != "schema_version"]
    schema.metadata.create_all(conn, tables=tables)


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "initial schema", _v1_initial),
]

LATEST = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(select(schema.schema_version.c.version)).scalar()
    return int(value or 0)


def migrate(engine: Engine) -> int:
    """Bring the database to :data:`LATEST`; returns the version found before."""
    with engine.begin() as conn:
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
