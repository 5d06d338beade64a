"""Alembic's environment, run by every migration command.

:func:`worker.store.migrations.migrate` hands over its own connection (inside its transaction,
holding the migration lock); otherwise, as for ``alembic revision --autogenerate``, it connects to
``sqlalchemy.url`` or ``AUDIENCE_SYNC_DATABASE_URL``. Batch mode keeps future ``ALTER``\\ s working on SQLite.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from worker.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or os.environ.get(
        "AUDIENCE_SYNC_DATABASE_URL", "sqlite:///var/audience-sync.sqlite3"
    )


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := context.config.attributes.get("connection")) is not None:
    _run(given)
else:
    engine = create_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()
