"""Run rows (one per step and mapping run) and the problems a pull found."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from worker.schema_fit import clean_text
from worker.store import schema
from worker.store.base import StoreBase, as_utc, chunks, utcnow


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


class RunQueries(StoreBase):
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
        rows = [
            {
                "run_id": run_id,
                "source": source,
                "ref": clean_text(ref)[0][:200],
                "reason": clean_text(reason)[0],
                "at": now,
            }
            for ref, reason in items
        ]
        with self.engine.begin() as conn:
            for chunk in chunks(rows):
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
