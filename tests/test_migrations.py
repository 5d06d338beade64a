"""Alembic migrations: the head is exactly schema.py, old databases are taken over, starts do not race."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, Table, create_engine, inspect, text
from sqlalchemy.engine import make_url

from worker.store import open_store
from worker.store.migrations import BASELINE, LATEST, LEGACY_FENCE, SCRIPT_LOCATION, migrate, new_revision
from worker.store.schema import metadata

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

#: what each hand-written version added to the schema (v1: everything else), to build old databases
ADDED_TABLES = {
    2: ["ingest_state"],
    3: ["results_state"],
    4: ["inflight", "mapping_state", "sync_requests", "erasure_targets", "webhook_deliveries", "data_requests"],
    5: ["segment_history", "web_sessions"],
    6: ["bulk_operations", "bulk_lines", "webhook_inbox", "source_credentials"],
}
#: tables Alembic revisions after the baseline added (no hand-written version ever had them)
AFTER_BASELINE = {"sync_parts", "results_log", "results_log_keys"}
#: columns they added to tables the baseline had
AFTER_BASELINE_COLUMNS = {"mapping_state": ["epoch"]}
#: indexes added by revisions after the baseline, per table: (index name, columns)
AFTER_BASELINE_INDEXES = {"orders": [("ix_orders_row_no", ("row_no",))]}
ADDED_COLUMNS = {
    2: {"orders": ["ingest_seq", "row_no"], "customers": ["ingest_seq", "row_no"]},
    4: {"acknowledged": ["erasure_id"], "erasures": ["kind", "origin"]},
}


@pytest.fixture(params=["sqlite", "postgres"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes empty databases of this test's own: SQLite files, or PostgreSQL databases it creates
    (beside the session's) and drops afterwards."""
    created: list[str] = []
    if request.param == "sqlite":

        def make_sqlite() -> str:
            created.append(f"sqlite:///{tmp_path / f'db-{len(created)}.sqlite3'}")
            return created[-1]

        yield make_sqlite
        return
    server = request.getfixturevalue("postgres_url")
    if server is None:
        pytest.skip("PostgreSQL is not reachable at AUDIENCE_SYNC_TEST_POSTGRES_URL")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")

    def make_postgres() -> str:
        name = f"audience_sync_mig_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(server).set(database=name).render_as_string(hide_password=False)

    try:
        yield make_postgres
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def engine_of(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def structure(engine: Engine, *, defaults: bool = True) -> dict[str, Any]:
    """Every table's columns (type, nullability, server default), primary key, indexes and unique
    constraints, as the database itself reports them (Alembic's own table left out)."""
    found: dict[str, Any] = {}
    with engine.connect() as conn:
        seen = inspect(conn)
        for name in sorted(set(seen.get_table_names()) - {"alembic_version"}):
            found[name] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default") if defaults else None)
                    for c in seen.get_columns(name)
                ],
                "primary_key": seen.get_pk_constraint(name)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in seen.get_indexes(name)
                ),
                "unique": sorted(tuple(u["column_names"]) for u in seen.get_unique_constraints(name)),
            }
    return found


def rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        names = sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
        return {n: sorted(tuple(r) for r in conn.execute(text(f'SELECT * FROM "{n}"'))) for n in names}


def revision_of(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def old_database(engine: Engine, version: int) -> None:
    """A database as the hand-written migrations left it at ``version`` (their v1 was ``create_all``
    of the current metadata, so a new database got every table at once), with a few rows."""
    later = {v: t for v, t in ADDED_TABLES.items() if v > version}
    skip_tables = {name for names in later.values() for name in names} | AFTER_BASELINE
    skip_columns: dict[str, set[str]] = {t: set(c) for t, c in AFTER_BASELINE_COLUMNS.items()}
    for v, tables in ADDED_COLUMNS.items():
        if v > version:
            for table_name, columns in tables.items():
                skip_columns.setdefault(table_name, set()).update(columns)
    old = MetaData()
    for table in metadata.sorted_tables:
        if table.name not in skip_tables:
            keep = [c._copy() for c in table.columns if c.name not in skip_columns.get(table.name, set())]
            for column in keep:
                if (f"ix_{table.name}_{column.name}", (column.name,)) in AFTER_BASELINE_INDEXES.get(table.name, []):
                    column.index = None
            Table(table.name, old, *keep)
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": version})
        if version >= 2:
            conn.execute(text("INSERT INTO ingest_state VALUES (1, 2, 3, 1, 'abc')"))
        if version >= 3:
            conn.execute(text("INSERT INTO results_state VALUES (1, 4)"))
        order = {"s": "shopify", "t": T0, "f": False}
        for order_id in ("o2", "o1"):
            conn.execute(
                text(
                    "INSERT INTO orders (order_id, source, created_at, updated_at, total, currency, cancelled, test,"
                    " has_discount) VALUES (:id, :s, :t, :t, 10.0, 'USD', :f, :f, :f)"
                ),
                {**order, "id": order_id},
            )
        detail = json.dumps({"keys": ["guest-key"], "customers": 1})
        extra = ("", "") if version < 4 else (", kind, origin", ", 'person', 'cli'")
        conn.execute(
            text(
                f"INSERT INTO erasures (id, email_sha256, requested_at, detail{extra[0]})"
                f" VALUES (1, 'ab', :t, :d{extra[1]})"
            ),
            {"t": T0, "d": detail},
        )


def test_the_head_creates_exactly_the_schema_of_schema_py(new_database: Callable[[], str]) -> None:
    """Migrations and schema.py cannot drift: same tables, columns, types, keys and indexes as
    ``create_all`` of the metadata, and Alembic's own comparison finds nothing to generate."""
    with engine_of(new_database()) as migrated, engine_of(new_database()) as reference:
        assert migrate(migrated) is None
        metadata.create_all(reference)
        assert structure(migrated) == structure(reference)
        with migrated.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
        assert revision_of(migrated) == [LATEST]
        seeded = rows(migrated)
        # past the baseline, the old program's version number is fenced: it refuses this database
        fenced = 6 if LATEST == BASELINE else LEGACY_FENCE
        assert seeded["schema_version"] == [(fenced,)] and seeded["results_state"] == [(1, 1)]
        assert [r[:4] for r in seeded["ingest_state"]] == [(1, 1, 1, 1)]
        assert migrate(migrated) == LATEST  # a second start changes nothing


def test_a_v6_database_of_the_hand_written_path_is_stamped_and_only_gains_the_later_revisions(
    new_database: Callable[[], str],
) -> None:
    with engine_of(new_database()) as engine:
        old_database(engine, 6)
        shape, data = structure(engine), rows(engine)
        assert migrate(engine) is None
        assert revision_of(engine) == [LATEST]
        after = structure(engine)
        assert set(after) - set(shape) == AFTER_BASELINE
        for table, columns in AFTER_BASELINE_COLUMNS.items():
            added = [c for c in after[table]["columns"] if c[0] in columns]
            assert [c[0] for c in added] == columns
            after[table]["columns"] = [c for c in after[table]["columns"] if c not in added]
        for table, indexes in AFTER_BASELINE_INDEXES.items():
            added_indexes = [i for i in after[table]["indexes"] if i[:2] in indexes]
            assert [i[:2] for i in added_indexes] == indexes
            after[table]["indexes"] = [i for i in after[table]["indexes"] if i not in added_indexes]
        assert {name: after[name] for name in shape} == shape  # what it had is untouched
        kept = rows(engine)
        assert kept.pop("schema_version") == [(LEGACY_FENCE,)]  # the program from before Alembic refuses it now
        assert {n: kept[n] for n in data if n != "schema_version"} == {
            n: v for n, v in data.items() if n != "schema_version"
        }
        assert migrate(engine) == LATEST


@pytest.mark.parametrize("version", [1, 3, 5])
def test_an_older_hand_written_version_is_brought_to_6_then_stamped(
    new_database: Callable[[], str], version: int
) -> None:
    with engine_of(new_database()) as engine, engine_of(new_database()) as fresh:
        old_database(engine, version)
        migrate(engine)
        migrate(fresh)
        assert revision_of(engine) == [LATEST]
        # the same schema as a new database (v4 gave its new NOT NULL columns a default: ignored here)
        assert structure(engine, defaults=False) == structure(fresh, defaults=False)
        data = rows(engine)
        assert data["schema_version"] == [(LEGACY_FENCE,)]
        assert len(data["ingest_state"]) == 1 and len(data["results_state"]) == 1
        with engine.connect() as conn:
            numbered = conn.execute(text("SELECT order_id, row_no, ingest_seq FROM orders ORDER BY order_id")).all()
            detail = json.loads(conn.execute(text("SELECT detail FROM erasures")).scalar_one())
        # v2 numbered the rows it found, in key order; v4 dropped the raw keys from erasures' detail
        expected_rows = [("o1", 1, 1), ("o2", 2, 1)] if version < 2 else [("o1", None, None), ("o2", None, None)]
        assert [tuple(r) for r in numbered] == expected_rows
        assert ("keys" in detail) is (version >= 4)


def test_a_database_newer_than_this_program_is_refused(new_database: Callable[[], str]) -> None:
    with engine_of(new_database()) as engine:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed0001'"))
        with pytest.raises(RuntimeError, match=r"revision f00dfeed0001 is newer than this program .*upgrade"):
            migrate(engine)
    with engine_of(new_database()) as legacy:
        old_database(legacy, 6)
        with legacy.begin() as conn:
            conn.execute(text("UPDATE schema_version SET version = :v"), {"v": LEGACY_FENCE})
        with pytest.raises(RuntimeError, match=r"version 7 is newer than this program"):
            migrate(legacy)


NEXT_REVISION = '''"""Add web_sessions.note"""

import sqlalchemy as sa
from alembic import op

revision = "test_next"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("web_sessions") as batch:
        batch.add_column(sa.Column("note", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("note")
'''


def test_a_later_revision_runs_after_the_stamp_and_fences_older_programs(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "test_next.py").write_text(NEXT_REVISION.format(down=LATEST))
    with engine_of(new_database()) as engine:
        old_database(engine, 6)
        migrate(engine, scripts)
        assert revision_of(engine) == ["test_next"]
        with engine.connect() as conn:
            assert "note" in {c["name"] for c in inspect(conn).get_columns("web_sessions")}
            # a program from before Alembic (hand-written LATEST 6) now refuses this database
            assert conn.execute(text("SELECT version FROM schema_version")).scalar_one() == LEGACY_FENCE
        with pytest.raises(RuntimeError, match="newer than this program"):
            migrate(engine)  # this program's revisions end before test_next


def test_two_processes_starting_together_on_a_new_database_both_succeed(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """Both open the store at the same instant (after their imports, met at a file barrier), from a
    directory without any Alembic file; the second waits on the lock and finds the schema made.
    Without the lock one of them fails (a second ``CREATE TABLE`` or seed row)."""
    url = new_database()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    code = (
        "import os, sys, time, pathlib; from worker.store import open_store; "
        "b = pathlib.Path(sys.argv[2]); (b / str(os.getpid())).touch()\n"
        "while len(list(b.iterdir())) < 2: time.sleep(0.002)\n"
        "open_store(sys.argv[1]).dispose()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(barrier)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
    with engine_of(url) as engine:
        assert revision_of(engine) == [LATEST]
        data = rows(engine)
        assert data["schema_version"] == [(LEGACY_FENCE,)]
        assert len(data["ingest_state"]) == 1 and len(data["results_state"]) == 1


def test_a_database_whose_tables_were_dropped_is_created_again(new_database: Callable[[], str]) -> None:
    """Only Alembic's version row left (``metadata.drop_all``): the database is new, not at the head."""
    url = new_database()
    open_store(url).dispose()
    with engine_of(url) as engine:
        metadata.drop_all(engine)
        assert migrate(engine) is None
        assert len(structure(engine)) == len(metadata.tables)


def test_a_new_revision_autogenerated_from_an_unchanged_schema_py_is_empty(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    made = new_revision("nothing changed", scripts)
    assert made.parent == scripts / "versions"
    source = made.read_text()
    assert f"down_revision: str | None = {LATEST!r}" in source
    assert "op." not in source.split("def upgrade() -> None:")[1]  # nothing to change


def test_the_migrate_command_shows_and_upgrades(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUDIENCE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite3'}"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "worker.cli", "migrate", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)

    check = cli("--check")
    assert check.returncode == 1 and "current:  none (new database)" in check.stdout
    assert not (tmp_path / "m.sqlite3").exists()  # --check changes nothing
    done = cli()
    assert done.returncode == 0, done.stderr
    assert f"head:     revision {LATEST}" in done.stdout and f"upgraded to revision {LATEST}" in done.stdout
    with engine_of(env["AUDIENCE_SYNC_DATABASE_URL"]) as engine:
        assert revision_of(engine) == [LATEST]
