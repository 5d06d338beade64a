"""Queries over the durable store. Every write that matters for correctness is its own transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Table, create_engine, delete, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from connectors.records import Consent, Member
from worker.segments.frames import CUSTOMER_COLUMNS, LINE_COLUMNS, ORDER_COLUMNS
from worker.store import schema
from worker.store.migrations import migrate

CHUNK = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(rows: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@dataclass
class RunRow:
    id: int
    kind: str
    mapping: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    counts: dict[str, Any]
    error: str | None


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    # -- helpers -------------------------------------------------------------------
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
        for chunk in _chunks(rows, 10_000):
            conn.execute(stmt, list(chunk))

    # -- ingest ----------------------------------------------------------------------
    def reserve_ingest(self, conn: Connection, rows: int) -> tuple[int, int]:
        """Next ingest batch number and the first of ``rows`` fresh row numbers.

        The counter row stays locked until the caller's transaction ends, so batches commit in
        sequence order and a snapshot that has read up to ``seq`` never misses an earlier batch.
        """
        state = schema.ingest_state.c
        conn.execute(update(schema.ingest_state).values(seq=state.seq + 1, next_row=state.next_row + rows))
        seq, next_row = conn.execute(select(state.seq, state.next_row)).one()
        return int(seq), int(next_row) - rows

    def bump_generation(self, conn: Connection) -> None:
        """Rows were deleted: every snapshot must reload (incremental refresh only sees writes)."""
        state = schema.ingest_state.c
        conn.execute(update(schema.ingest_state).values(generation=state.generation + 1))

    def bump_results(self, conn: Connection) -> int:
        """Profiles or memberships are being written: returns the new results version (see persist.py)."""
        state = schema.results_state.c
        conn.execute(update(schema.results_state).values(version=state.version + 1))
        return int(conn.execute(select(state.version)).scalar_one())

    def _stamped(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        seq, first = self.reserve_ingest(conn, len(rows))
        return [{**row, "ingest_seq": seq, "row_no": first + i} for i, row in enumerate(rows)]

    def upsert_customers(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        with self.engine.begin() as conn:
            self._upsert(conn, schema.customers, self._stamped(conn, rows), ["customer_id"], keep=("row_no",))

    def upsert_orders(self, rows: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]]) -> None:
        """Orders upserted by id; their lines replaced as a whole (an edit can drop a line)."""
        if not rows:
            return
        with self.engine.begin() as conn:
            self._upsert(conn, schema.orders, self._stamped(conn, rows), ["order_id"], keep=("row_no",))
            ids = [r["order_id"] for r in rows]
            for chunk in _chunks(ids):
                conn.execute(delete(schema.order_lines).where(schema.order_lines.c.order_id.in_(chunk)))
            for chunk in _chunks(list(lines)):
                conn.execute(schema.order_lines.insert(), list(chunk))

    def set_engagement(self, rows: Sequence[tuple[str, datetime]]) -> None:
        with self.engine.begin() as conn:
            seq, _ = self.reserve_ingest(conn, 0)
            for customer_id, when in rows:
                conn.execute(
                    update(schema.customers)
                    .where(schema.customers.c.customer_id == customer_id)
                    .values(last_engaged_at=when, ingest_seq=seq)
                )

    def get_watermark(self, source: str, stream: str) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(schema.watermarks.c.value).where(
                    schema.watermarks.c.source == source, schema.watermarks.c.stream == stream
                )
            ).scalar()
        return as_utc(value)

    def set_watermark(self, source: str, stream: str, value: datetime) -> None:
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                schema.watermarks,
                [{"source": source, "stream": stream, "value": value, "updated_at": utcnow()}],
                ["source", "stream"],
            )

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
                for name, table in (("orders", schema.orders), ("customers", schema.customers))
            }

    # -- frames for the segment engine -----------------------------------------------------
    def _frame(self, table: Table, columns: list[str]) -> pd.DataFrame:
        with self.engine.connect() as conn:
            result = conn.execute(select(*[table.c[c] for c in columns]))
            return pd.DataFrame(result.fetchall(), columns=columns)

    def orders_frame(self) -> pd.DataFrame:
        cols = [*ORDER_COLUMNS, "accepts_marketing"]
        frame = self._frame(schema.orders, cols)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        return frame

    def customers_frame(self) -> pd.DataFrame:
        cols = list(CUSTOMER_COLUMNS)
        frame = self._frame(schema.customers, cols)
        frame["last_engaged_at"] = pd.to_datetime(frame["last_engaged_at"], utc=True)
        return frame

    def lines_frame(self) -> pd.DataFrame:
        return self._frame(schema.order_lines, list(LINE_COLUMNS))

    # -- recompute results -------------------------------------------------------------
    def replace_profiles(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self.engine.begin() as conn:
            self.bump_results(conn)
            conn.execute(delete(schema.profiles))
            for chunk in _chunks(list(rows), 5000):
                conn.execute(schema.profiles.insert(), list(chunk))

    def replace_segments(self, members: Mapping[str, Iterable[str]]) -> dict[str, dict[str, int]]:
        """Store new membership; returns per segment the size, joined and left counts."""
        changes: dict[str, dict[str, int]] = {}
        with self.engine.begin() as conn:
            self.bump_results(conn)
            for segment, keys in members.items():
                new = set(keys)
                old = {
                    r[0]
                    for r in conn.execute(
                        select(schema.segment_members.c.customer_key).where(schema.segment_members.c.segment == segment)
                    )
                }
                joined, left = new - old, old - new
                for chunk in _chunks(sorted(left)):
                    conn.execute(
                        delete(schema.segment_members).where(
                            schema.segment_members.c.segment == segment,
                            schema.segment_members.c.customer_key.in_(chunk),
                        )
                    )
                for chunk in _chunks(sorted(joined), 5000):
                    conn.execute(
                        schema.segment_members.insert(),
                        [{"segment": segment, "customer_key": k} for k in chunk],
                    )
                changes[segment] = {"size": len(new), "joined": len(joined), "left": len(left)}
            stale = conn.execute(select(schema.segment_members.c.segment).distinct()).scalars().all()
            for segment in set(stale) - set(members):
                conn.execute(delete(schema.segment_members).where(schema.segment_members.c.segment == segment))
        return changes

    def segment_keys(self, segment: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(schema.segment_members.c.customer_key).where(schema.segment_members.c.segment == segment)
                ).scalars()
            )

    def segment_sizes(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.segment_members.c.segment, func.count()).group_by(schema.segment_members.c.segment)
            ).all()
        return {str(segment): int(n) for segment, n in rows}

    def members(self, keys: Iterable[str]) -> dict[str, Member]:
        """Profiles of ``keys`` as destination members (keys with no profile are left out)."""
        wanted = sorted(set(keys))
        found: dict[str, Member] = {}
        p = schema.profiles.c
        with self.engine.connect() as conn:
            for chunk in _chunks(wanted, 5000):
                for row in conn.execute(select(schema.profiles).where(p.customer_key.in_(chunk))):
                    found[row.customer_key] = Member(
                        key=row.customer_key,
                        email=row.email,
                        phone=row.phone,
                        first_name=row.first_name,
                        last_name=row.last_name,
                        country=row.country,
                        email_consent=Consent(row.email_consent),
                    )
        return found

    # -- acknowledged state ---------------------------------------------------------------
    def acknowledged(self, mapping: str) -> dict[str, str]:
        a = schema.acknowledged.c
        with self.engine.connect() as conn:
            return {
                row.identity: row.customer_key
                for row in conn.execute(select(a.identity, a.customer_key).where(a.mapping == mapping))
            }

    def ack_added(self, mapping: str, pairs: Sequence[tuple[str, str]]) -> None:
        now = utcnow()
        rows = [{"mapping": mapping, "identity": i, "customer_key": k, "acked_at": now} for i, k in pairs]
        with self.engine.begin() as conn:
            self._upsert(conn, schema.acknowledged, rows, ["mapping", "identity"])
            self._forget_rejections(conn, mapping, [i for i, _ in pairs])

    def ack_removed(self, mapping: str, identities: Sequence[str]) -> None:
        a = schema.acknowledged.c
        with self.engine.begin() as conn:
            for chunk in _chunks(list(identities)):
                conn.execute(delete(schema.acknowledged).where(a.mapping == mapping, a.identity.in_(chunk)))
            self._forget_rejections(conn, mapping, identities)

    def _forget_rejections(self, conn: Connection, mapping: str, identities: Sequence[str]) -> None:
        r = schema.rejected.c
        for chunk in _chunks(list(identities)):
            conn.execute(delete(schema.rejected).where(r.mapping == mapping, r.identity.in_(chunk)))

    def record_rejections(self, mapping: str, run_id: int | None, rows: Sequence[Mapping[str, str]]) -> None:
        """Rows of identity, customer_key, operation, code, reason; the latest reason wins."""
        now = utcnow()
        full = [{"mapping": mapping, "run_id": run_id, "at": now, **r} for r in rows]
        with self.engine.begin() as conn:
            self._upsert(conn, schema.rejected, full, ["mapping", "identity"])

    def rejected(self, mapping: str) -> dict[str, dict[str, Any]]:
        r = schema.rejected.c
        with self.engine.connect() as conn:
            return {
                row.identity: dict(row._mapping)
                for row in conn.execute(select(schema.rejected).where(r.mapping == mapping))
            }

    def clear_rejections(self, mapping: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(schema.rejected).where(schema.rejected.c.mapping == mapping))

    # -- pauses ----------------------------------------------------------------------------
    def pause(self, mapping: str, not_before: datetime, reason: str) -> None:
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                schema.pauses,
                [{"mapping": mapping, "not_before": not_before, "reason": reason}],
                ["mapping"],
            )

    def paused_until(self, mapping: str, now: datetime) -> datetime | None:
        with self.engine.begin() as conn:
            value = as_utc(
                conn.execute(select(schema.pauses.c.not_before).where(schema.pauses.c.mapping == mapping)).scalar()
            )
            if value is not None and value <= now:
                conn.execute(delete(schema.pauses).where(schema.pauses.c.mapping == mapping))
                return None
            return value

    # -- erasure ------------------------------------------------------------------------------
    def erase_person(self, email: str, email_sha256: str) -> tuple[int, dict[str, Any]]:
        """Delete a person's customer rows, orders, lines and profiles; record the audit row.

        Returns the erasure id and what was deleted. The acknowledged rows stay until each
        destination confirms the removal (that is how the sync knows whom to remove).
        """
        c, o, p = schema.customers.c, schema.orders.c, schema.profiles.c
        with self.engine.begin() as conn:
            customer_ids = list(conn.execute(select(c.customer_id).where(c.email == email)).scalars())
            order_ids = list(
                conn.execute(
                    select(o.order_id).where((o.email == email) | o.customer_id.in_(customer_ids or [""]))
                ).scalars()
            )
            for chunk in _chunks(order_ids):
                conn.execute(delete(schema.order_lines).where(schema.order_lines.c.order_id.in_(chunk)))
                conn.execute(delete(schema.orders).where(o.order_id.in_(chunk)))
            conn.execute(delete(schema.customers).where(c.email == email))
            keys = [email, *customer_ids]
            conn.execute(delete(schema.profiles).where(p.customer_key.in_(keys) | (p.email == email)))
            conn.execute(delete(schema.segment_members).where(schema.segment_members.c.customer_key.in_(keys)))
            self.bump_generation(conn)
            self.bump_results(conn)
            detail = {"customer_ids": customer_ids, "orders_deleted": len(order_ids), "keys": keys}
            result = conn.execute(
                schema.erasures.insert().values(
                    email_sha256=email_sha256, requested_at=utcnow(), detail=json.dumps(detail)
                )
            )
            key = result.inserted_primary_key
            assert key is not None
        return int(key[0]), detail

    def complete_erasure(self, erasure_id: int, detail: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.erasures)
                .where(schema.erasures.c.id == erasure_id)
                .values(completed_at=utcnow(), detail=json.dumps(detail))
            )

    def suppressed(self) -> tuple[set[str], set[str]]:
        """Email hashes and customer ids erased: never stored again when a source sends them."""
        hashes: set[str] = set()
        ids: set[str] = set()
        with self.engine.connect() as conn:
            for digest, detail in conn.execute(select(schema.erasures.c.email_sha256, schema.erasures.c.detail)):
                hashes.add(digest)
                ids.update(json.loads(detail or "{}").get("customer_ids", []))
        return hashes, ids

    # -- runs and problems -------------------------------------------------------------------
    def start_run(self, kind: str, mapping: str | None = None, task_id: str | None = None) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                schema.runs.insert().values(
                    kind=kind,
                    mapping=mapping,
                    task_id=task_id,
                    started_at=utcnow(),
                    status="running",
                    counts="{}",
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def mark_interrupted(self, kind: str, mapping: str | None) -> int:
        """Close rows left ``running`` by a killed worker; call only while holding the step's lock."""
        r = schema.runs.c
        condition = r.mapping.is_(None) if mapping is None else r.mapping == mapping
        with self.engine.begin() as conn:
            result = conn.execute(
                update(schema.runs)
                .where(r.kind == kind, condition, r.status == "running")
                .values(status="interrupted", finished_at=utcnow(), error="worker stopped mid-run; resumed later")
            )
        return int(result.rowcount or 0)

    def update_run(self, run_id: int, counts: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schema.runs).where(schema.runs.c.id == run_id).values(counts=json.dumps(counts)))

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, Any], error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.runs)
                .where(schema.runs.c.id == run_id)
                .values(status=status, counts=json.dumps(counts), error=error, finished_at=utcnow())
            )

    def add_problems(self, run_id: int | None, source: str, items: Sequence[tuple[str, str]]) -> None:
        if not items:
            return
        now = utcnow()
        rows = [{"run_id": run_id, "source": source, "ref": ref, "reason": reason, "at": now} for ref, reason in items]
        with self.engine.begin() as conn:
            for chunk in _chunks(rows):
                conn.execute(schema.problems.insert(), list(chunk))

    def problems(self, run_id: int) -> list[tuple[str, str]]:
        p = schema.problems.c
        with self.engine.connect() as conn:
            return [(r.ref, r.reason) for r in conn.execute(select(p.ref, p.reason).where(p.run_id == run_id))]

    @staticmethod
    def _run(row: Any) -> RunRow:
        return RunRow(
            id=row.id,
            kind=row.kind,
            mapping=row.mapping,
            started_at=as_utc(row.started_at) or utcnow(),
            finished_at=as_utc(row.finished_at),
            status=row.status,
            counts=json.loads(row.counts or "{}"),
            error=row.error,
        )

    def run(self, run_id: int) -> RunRow:
        with self.engine.connect() as conn:
            return self._run(conn.execute(select(schema.runs).where(schema.runs.c.id == run_id)).one())

    def last_runs(self) -> list[RunRow]:
        """The latest run of each (kind, mapping)."""
        r = schema.runs.c
        latest = select(func.max(r.id)).group_by(r.kind, r.mapping).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.runs).where(r.id.in_(latest)).order_by(r.kind, r.mapping)).all()
        return [self._run(row) for row in rows]

    def recent_runs(self, limit: int = 50, mapping: str | None = None) -> list[RunRow]:
        r = schema.runs.c
        query = select(schema.runs).order_by(r.id.desc()).limit(limit)
        if mapping is not None:
            query = query.where(r.mapping == mapping)
        with self.engine.connect() as conn:
            return [self._run(row) for row in conn.execute(query)]

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_store(url: str) -> Store:
    """Connect, create the SQLite folder if needed, and migrate the schema to the latest version."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return Store(engine)


__all__ = ["RunRow", "Store", "as_utc", "open_store"]
