"""Parts of a split sync: what each holds, which are done, and the one close of the run.

The planning run writes every part with its identities (one JSON value per part) in one transaction, so a part is either
wholly owed or not at all; each part task settles its batches through the normal write-ahead path
(``begin_batch`` / ``settle_batch`` under the run's fence) and then marks its part. Whoever marks
the last part closes the run, exactly once (a conditional update of the run row).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from worker.store import schema
from worker.store.base import utcnow
from worker.store.membership import MembershipQueries

#: counts a part adds up into its run's row
PART_COUNTS = ("added", "removed", "rejected", "erased_removed", "changed")


@dataclass(frozen=True)
class Part:
    run_id: int
    part: int
    mapping: str
    op: str
    state: str
    size: int
    attempts: int
    counts: dict[str, int]
    error: str | None
    #: host:pid of the worker that last took it
    worker: str | None = None


@dataclass(frozen=True)
class WorkItem:
    identity: str
    customer_key: str
    erasure_id: int | None


def _without_items() -> list[Any]:
    """A part's columns but its identities: state and counts are read after every part, the
    identities (megabytes per part) only by the part that sends them."""
    return [c for c in schema.sync_parts.c if c.name != "items"]


class PartQueries(MembershipQueries):
    def write_parts(self, mapping: str, run_id: int, parts: Sequence[tuple[str, Sequence[WorkItem]]]) -> None:
        """Every part of a split run with its identities, in one transaction."""
        rows = [
            {
                "run_id": run_id,
                "part": number,
                "mapping": mapping,
                "op": op,
                "state": "pending",
                "size": len(items),
                "attempts": 0,
                "counts": "{}",
                "items": json.dumps([[w.identity, w.customer_key, w.erasure_id] for w in items]),
            }
            for number, (op, items) in enumerate(parts)
        ]
        with self.engine.begin() as conn:
            self._check_fence(conn, mapping, run_id)
            conn.execute(schema.sync_parts.insert(), rows)

    def parts(self, run_id: int) -> list[Part]:
        p = schema.sync_parts.c
        with self.engine.connect() as conn:
            found = conn.execute(select(*_without_items()).where(p.run_id == run_id).order_by(p.part)).all()
        return [self._part(row) for row in found]

    def part(self, run_id: int, number: int) -> Part | None:
        p = schema.sync_parts.c
        with self.engine.connect() as conn:
            row = conn.execute(select(*_without_items()).where(p.run_id == run_id, p.part == number)).first()
        return self._part(row) if row is not None else None

    def open_split(self, mapping: str) -> int | None:
        """The split run of ``mapping`` still owed parts (at most one: no new plan starts while one is)."""
        p, r = schema.sync_parts.c, schema.runs.c
        with self.engine.connect() as conn:
            found = conn.execute(
                select(p.run_id)
                .join(schema.runs, r.id == p.run_id)
                .where(p.mapping == mapping, p.state == "pending", r.status == "running")
                .order_by(p.run_id.desc())
                .limit(1)
            ).scalar()
        return int(found) if found is not None else None

    def unclosed_splits(self, mapping: str) -> list[int]:
        """Split runs still ``running`` whose parts are all settled (closing was cut short)."""
        p, r = schema.sync_parts.c, schema.runs.c
        pending = select(p.run_id).where(p.state == "pending").scalar_subquery()
        with self.engine.connect() as conn:
            found = conn.execute(
                select(p.run_id)
                .join(schema.runs, r.id == p.run_id)
                .where(p.mapping == mapping, r.status == "running", p.run_id.not_in(pending))
                .distinct()
            ).scalars()
            return [int(x) for x in found]

    def part_work(self, run_id: int, number: int) -> list[WorkItem]:
        p = schema.sync_parts.c
        with self.engine.connect() as conn:
            items = conn.execute(select(p["items"]).where(p.run_id == run_id, p.part == number)).scalar()
        return sorted((WorkItem(i, k, e) for i, k, e in json.loads(items or "[]")), key=lambda w: w.identity)

    def start_part(self, run_id: int, number: int, worker: str) -> None:
        p = schema.sync_parts.c
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.sync_parts)
                .where(p.run_id == run_id, p.part == number)
                .values(attempts=p.attempts + 1, worker=worker, started_at=utcnow())
            )

    def count_part(self, run_id: int, number: int, counts: Mapping[str, int]) -> None:
        """A part's counts so far (after each batch: a part taken over after a kill keeps them)."""
        p = schema.sync_parts.c
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.sync_parts)
                .where(p.run_id == run_id, p.part == number)
                .values(counts=json.dumps(dict(counts)))
            )

    def finish_part(self, run_id: int, number: int, state: str, error: str | None = None) -> bool:
        """Mark a part ``done`` or ``failed`` and drop its identities; True when no part is pending any more."""
        p = schema.sync_parts.c
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.sync_parts)
                .where(p.run_id == run_id, p.part == number, p.state == "pending")
                .values(state=state, error=error, finished_at=utcnow(), items="[]")
            )
            left = conn.execute(
                select(func.count()).select_from(schema.sync_parts).where(p.run_id == run_id, p.state == "pending")
            ).scalar_one()
        return int(left) == 0

    def close_split_run(self, run_id: int, status: str, counts: Mapping[str, Any], error: str | None) -> bool:
        """Close a split run once: only the caller whose update found it ``running`` returns True."""
        r = schema.runs.c
        with self.engine.begin() as conn:
            result = conn.execute(
                update(schema.runs)
                .where(r.id == run_id, r.status == "running")
                .values(status=status, counts=json.dumps(dict(counts)), error=error, finished_at=utcnow())
            )
        return bool(result.rowcount)

    def abandon_parts(self, run_id: int, reason: str) -> int:
        """A split run closed another way (interrupted, superseded): its pending parts are failed."""
        p = schema.sync_parts.c
        with self.engine.begin() as conn:
            result = conn.execute(
                update(schema.sync_parts)
                .where(p.run_id == run_id, p.state == "pending")
                .values(state="failed", error=reason, finished_at=utcnow(), items="[]")
            )
        return int(result.rowcount or 0)

    def _drop_from_parts(self, conn: Connection, holds: Callable[[str, str], bool]) -> None:
        """Take the people ``holds(identity, customer key)`` names out of every owed part (an erasure)."""
        p = schema.sync_parts.c
        for run_id, number, items in conn.execute(
            select(p.run_id, p.part, p["items"]).where(p.state == "pending")
        ).all():
            kept = [item for item in json.loads(items) if not holds(item[0], item[1])]
            conn.execute(
                update(schema.sync_parts)
                .where(p.run_id == run_id, p.part == number)
                .values(items=json.dumps(kept), size=len(kept))
            )

    @staticmethod
    def _part(row: Any) -> Part:
        return Part(
            int(row.run_id),
            int(row.part),
            row.mapping,
            row.op,
            row.state,
            int(row.size),
            int(row.attempts or 0),
            {k: int(v) for k, v in json.loads(row.counts or "{}").items()},
            row.error,
            row.worker,
        )
