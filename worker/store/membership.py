"""Per mapping: what the destination acknowledged, what is in flight, rejections, pauses, fences.

A batch is recorded twice: :meth:`begin_batch` writes its identities as in flight *before* it is sent,
and :meth:`settle_batch` applies the destination's answer (acknowledge, forget, reject) and clears the
intents in one transaction, after checking the run still holds the mapping's fence. A worker killed
between the two leaves the intents behind, and the next sync treats them as possibly applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from worker.store import schema
from worker.store.base import StoreBase, as_utc, chunks, utcnow
from worker.store.sync_state import touch


class FenceLost(RuntimeError):
    """Another run of the same mapping took over; this one must stop recording."""


@dataclass(frozen=True)
class InFlight:
    op: str
    customer_key: str
    erasure_id: int | None


@dataclass(frozen=True)
class Marked:
    """An acknowledged identity of an erased person: removed whatever the mapping's mode."""

    customer_key: str
    erasure_id: int


@dataclass(frozen=True)
class SyncRequest:
    mapping: str
    full: bool
    reason: str
    requested_at: datetime
    task_id: str | None
    sent_at: datetime | None = None


class MembershipQueries(StoreBase):
    # -- acknowledged and in flight ------------------------------------------------------------
    def acknowledged(self, mapping: str) -> dict[str, str]:
        a = schema.acknowledged.c
        with self.engine.connect() as conn:
            return {
                row.identity: row.customer_key
                for row in conn.execute(select(a.identity, a.customer_key).where(a.mapping == mapping))
            }

    def acknowledged_among(
        self, mapping: str, identities: Iterable[str], *, since: datetime | None = None
    ) -> dict[str, str]:
        """The acknowledged rows of ``identities`` only (an incremental diff's candidates); with
        ``since``, only those acknowledged at or after it."""
        a = schema.acknowledged.c
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(identities), self.in_chunk):
                query = select(a.identity, a.customer_key).where(a.mapping == mapping, self._among(a.identity, chunk))
                if since is not None:
                    query = query.where(a.acked_at >= since)
                out.update((row.identity, row.customer_key) for row in conn.execute(query))
        return out

    def acknowledged_since(self, mapping: str, since: datetime) -> set[str]:
        """Identities (re)acknowledged at or after ``since``: a full resync's checkpoint."""
        a = schema.acknowledged.c
        with self.engine.connect() as conn:
            return set(conn.execute(select(a.identity).where(a.mapping == mapping, a.acked_at >= since)).scalars())

    def acknowledged_before(self, mapping: str, cutoff: datetime) -> set[str]:
        """Identities last (re)acknowledged before ``cutoff``: due a refresh where membership expires."""
        a = schema.acknowledged.c
        with self.engine.connect() as conn:
            return set(conn.execute(select(a.identity).where(a.mapping == mapping, a.acked_at < cutoff)).scalars())

    def erased_members(self, mapping: str) -> dict[str, Marked]:
        """Acknowledged and in-flight identities owed a removal because their person was erased."""
        out: dict[str, Marked] = {}
        with self.engine.connect() as conn:
            for table in (schema.acknowledged, schema.inflight):
                c = table.c
                for row in conn.execute(
                    select(c.identity, c.customer_key, c.erasure_id).where(
                        c.mapping == mapping, c.erasure_id.is_not(None)
                    )
                ):
                    out[row.identity] = Marked(row.customer_key, int(row.erasure_id))
        return out

    def inflight(self, mapping: str) -> dict[str, InFlight]:
        f = schema.inflight.c
        with self.engine.connect() as conn:
            return {
                row.identity: InFlight(row.op, row.customer_key, row.erasure_id)
                for row in conn.execute(
                    select(f.identity, f.op, f.customer_key, f.erasure_id).where(f.mapping == mapping)
                )
            }

    def begin_batch(
        self, mapping: str, run_id: int | None, op: str, rows: Sequence[tuple[str, str, int | None]]
    ) -> None:
        """Record (identity, customer key, erasure id) as in flight before the batch is sent."""
        now = utcnow()
        intents = [
            {
                "mapping": mapping,
                "identity": i,
                "op": op,
                "customer_key": k,
                "run_id": run_id,
                "at": now,
                "erasure_id": e,
            }
            for i, k, e in rows
        ]
        with self.engine.begin() as conn:
            self._check_fence(conn, mapping, run_id)
            self._upsert(conn, schema.inflight, intents, ["mapping", "identity"])

    def settle_batch(
        self,
        mapping: str,
        run_id: int | None,
        op: str,
        accepted: Sequence[tuple[str, str]],
        rejections: Sequence[Mapping[str, str]] = (),
        at: datetime | None = None,
    ) -> None:
        """Apply the destination's answer: accepted identities acknowledged (add) or forgotten (remove),
        rejections recorded, and the intents of every answered identity cleared. One transaction.
        ``at`` is the engine's clock (membership lifetimes count from it)."""
        now = at or utcnow()
        answered = [i for i, _ in accepted] + [r["identity"] for r in rejections]
        with self.engine.begin() as conn:
            self._check_fence(conn, mapping, run_id)
            if op == "add":
                rows = [
                    {"mapping": mapping, "identity": i, "customer_key": k, "acked_at": now, "erasure_id": None}
                    for i, k in accepted
                ]
                self._upsert(conn, schema.acknowledged, rows, ["mapping", "identity"])
            else:
                a = schema.acknowledged.c
                for chunk in chunks([i for i, _ in accepted], self.in_chunk):
                    conn.execute(
                        delete(schema.acknowledged).where(a.mapping == mapping, self._among(a.identity, chunk))
                    )
            self._forget_rejections(conn, mapping, [i for i, _ in accepted])
            if rejections:
                full = [{"mapping": mapping, "run_id": run_id, "at": now, **r} for r in rejections]
                self._upsert(conn, schema.rejected, full, ["mapping", "identity"])
            f = schema.inflight.c
            for chunk in chunks(answered, self.in_chunk):
                conn.execute(delete(schema.inflight).where(f.mapping == mapping, self._among(f.identity, chunk)))

    def replace_acknowledged(
        self,
        mapping: str,
        run_id: int | None,
        accepted: Sequence[tuple[str, str]],
        rejections: Sequence[Mapping[str, str]],
        at: datetime | None = None,
    ) -> None:
        """A native full replace succeeded: the destination holds exactly ``accepted`` now."""
        now = at or utcnow()
        with self.engine.begin() as conn:
            self._check_fence(conn, mapping, run_id)
            conn.execute(delete(schema.acknowledged).where(schema.acknowledged.c.mapping == mapping))
            conn.execute(delete(schema.inflight).where(schema.inflight.c.mapping == mapping))
            rows = [
                {"mapping": mapping, "identity": i, "customer_key": k, "acked_at": now, "erasure_id": None}
                for i, k in accepted
            ]
            self._upsert(conn, schema.acknowledged, rows, ["mapping", "identity"])
            if rejections:
                full = [{"mapping": mapping, "run_id": run_id, "at": now, **r} for r in rejections]
                self._upsert(conn, schema.rejected, full, ["mapping", "identity"])
        self._outside_plan(mapping, None)

    def ack_added(self, mapping: str, pairs: Sequence[tuple[str, str]]) -> None:
        """Acknowledge outside a sync run (tests, imports): no fence, no intents."""
        self.settle_batch(mapping, None, "add", pairs)
        self._outside_plan(mapping, [i for i, _ in pairs])

    def ack_removed(self, mapping: str, identities: Sequence[str]) -> None:
        self.settle_batch(mapping, None, "remove", [(i, "") for i in identities])
        self._outside_plan(mapping, identities)

    # -- writes outside a sync's plan ---------------------------------------------------------------
    def _outside_plan(self, mapping: str, identities: Sequence[str] | None) -> None:
        """Acknowledged or rejected rows were written outside a plan: this process's next plan
        re-examines them, and every process's next plan checks everyone (the mapping's epoch grew)."""
        state = schema.mapping_state.c
        with self.engine.begin() as conn:
            if not self._insert_ignore(conn, schema.mapping_state, {"mapping": mapping, "epoch": 1}, ["mapping"]):
                conn.execute(update(schema.mapping_state).where(state.mapping == mapping).values(epoch=state.epoch + 1))
        touch(self, mapping, identities)

    def mapping_epoch(self, mapping: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(schema.mapping_state.c.epoch).where(schema.mapping_state.c.mapping == mapping)
            ).scalar()
        return int(value or 0)

    # -- fences: one recording run per mapping ------------------------------------------------
    def claim_fence(self, mapping: str, run_id: int) -> None:
        """From now on only ``run_id`` records for ``mapping`` (a run still writing stops at its next batch)."""
        with self.engine.begin() as conn:
            if not self._insert_ignore(conn, schema.mapping_state, {"mapping": mapping, "fence": run_id}, ["mapping"]):
                conn.execute(
                    update(schema.mapping_state).where(schema.mapping_state.c.mapping == mapping).values(fence=run_id)
                )

    def _check_fence(self, conn: Connection, mapping: str, run_id: int | None) -> None:
        if run_id is None:
            return
        query = select(schema.mapping_state.c.fence).where(schema.mapping_state.c.mapping == mapping)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        fence = conn.execute(query).scalar()
        if fence is not None and int(fence) != run_id:
            raise FenceLost(f"run {run_id} of {mapping} was superseded by run {fence}; it stops recording")

    # -- what a destination asked us to remember (e.g. the segment it created) ------------------------
    def remembered(self, mapping: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(schema.mapping_state.c.remembered).where(schema.mapping_state.c.mapping == mapping)
            ).scalar()
        return dict(json.loads(value)) if value else {}

    def remember(self, mapping: str, key: str, value: Any) -> None:
        state = schema.mapping_state.c
        with self.engine.begin() as conn:
            self._insert_ignore(conn, schema.mapping_state, {"mapping": mapping, "remembered": "{}"}, ["mapping"])
            data = json.loads(conn.execute(select(state.remembered).where(state.mapping == mapping)).scalar() or "{}")
            data[key] = value
            conn.execute(
                update(schema.mapping_state).where(state.mapping == mapping).values(remembered=json.dumps(data))
            )

    # -- rejections --------------------------------------------------------------------------------
    def _forget_rejections(self, conn: Connection, mapping: str, identities: Sequence[str]) -> None:
        r = schema.rejected.c
        if conn.execute(select(r.identity).where(r.mapping == mapping).limit(1)).first() is None:
            return  # nothing to forget (the usual case): no search at all
        for chunk in chunks(list(identities), self.in_chunk):
            conn.execute(delete(schema.rejected).where(r.mapping == mapping, self._among(r.identity, chunk)))

    def record_rejections(self, mapping: str, run_id: int | None, rows: Sequence[Mapping[str, str]]) -> None:
        """Rows of identity, customer_key, operation, code, reason; the latest reason wins."""
        now = utcnow()
        full = [{"mapping": mapping, "run_id": run_id, "at": now, **r} for r in rows]
        with self.engine.begin() as conn:
            self._upsert(conn, schema.rejected, full, ["mapping", "identity"])
        self._outside_plan(mapping, [r["identity"] for r in rows])

    def rejected(self, mapping: str) -> dict[str, dict[str, Any]]:
        r = schema.rejected.c
        with self.engine.connect() as conn:
            return {
                row.identity: dict(row._mapping)
                for row in conn.execute(select(schema.rejected).where(r.mapping == mapping))
            }

    def rejected_by_run(self, mapping: str, run_id: int) -> set[str]:
        """Identities the run ``run_id`` recorded as refused (a split part taken again skips them)."""
        r = schema.rejected.c
        with self.engine.connect() as conn:
            return set(conn.execute(select(r.identity).where(r.mapping == mapping, r.run_id == run_id)).scalars())

    def clear_rejections(self, mapping: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(schema.rejected).where(schema.rejected.c.mapping == mapping))
        self._outside_plan(mapping, None)

    # -- owed syncs: the store, not the queue, says what is owed ----------------------------------------
    def request_sync(self, mapping: str, *, full: bool, reason: str) -> tuple[SyncRequest, bool]:
        """Record that ``mapping`` is owed a sync; returns the request and whether one was already owed
        (then it is coalesced: a full request upgrades a pending diff, and is stamped anew so a run
        already under way does not settle it)."""
        s = schema.sync_requests.c
        now = utcnow()
        with self.engine.begin() as conn:
            row = {
                "mapping": mapping,
                "full": full,
                "reason": reason,
                "requested_at": now,
                "task_id": None,
                "sent_at": None,
            }
            created = self._insert_ignore(conn, schema.sync_requests, row, ["mapping"])
            if not created:
                existing = conn.execute(select(schema.sync_requests).where(s.mapping == mapping)).one()
                if full and not existing.full:
                    conn.execute(
                        update(schema.sync_requests)
                        .where(s.mapping == mapping)
                        .values(full=True, reason=reason, requested_at=now)
                    )
            current = conn.execute(select(schema.sync_requests).where(s.mapping == mapping)).one()
        return self._request(current), not created

    def set_request_task(self, mapping: str, task_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.sync_requests)
                .where(schema.sync_requests.c.mapping == mapping)
                .values(task_id=task_id, sent_at=utcnow())
            )

    def sync_request(self, mapping: str) -> SyncRequest | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.sync_requests).where(schema.sync_requests.c.mapping == mapping)).first()
        return self._request(row) if row is not None else None

    def owed_syncs(self) -> list[SyncRequest]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.sync_requests).order_by(schema.sync_requests.c.requested_at)).all()
        return [self._request(r) for r in rows]

    def settle_sync_request(self, mapping: str, started_at: datetime) -> bool:
        """A sync that started at ``started_at`` finished: the request it served is settled; one made
        (or upgraded) after it started stays owed. Returns True when a request remains."""
        s = schema.sync_requests.c
        with self.engine.begin() as conn:
            conn.execute(delete(schema.sync_requests).where(s.mapping == mapping, s.requested_at <= started_at))
            return conn.execute(select(s.mapping).where(s.mapping == mapping)).first() is not None

    def release_sync_request(self, mapping: str) -> None:
        """The task serving the request ended without settling it (failed, deferred): the request
        stays owed, and the next ask (the cycle's, a person's) sends a new task at once."""
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.sync_requests)
                .where(schema.sync_requests.c.mapping == mapping)
                .values(task_id=None, sent_at=None)
            )

    @staticmethod
    def _request(row: Any) -> SyncRequest:
        return SyncRequest(
            mapping=row.mapping,
            full=bool(row.full),
            reason=row.reason,
            requested_at=as_utc(row.requested_at) or utcnow(),
            task_id=row.task_id,
            sent_at=as_utc(row.sent_at),
        )

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
