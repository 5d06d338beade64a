"""Erasure as one durable state machine, data requests, and webhook deduplication.

An erasure is recorded at once, in one transaction, holding only the email's SHA-256 and customer ids:
the person's rows are deleted, their acknowledged and in-flight rows are marked with the erasure (and
lose their customer key), and a target row per mapping says how many identities were held. The normal
sync of each mapping removes marked rows whatever the mapping's mode; :meth:`settle_erasures` closes a
target when none of its marked rows is left, and the erasure when every target is closed, whichever
process ran the syncs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from connectors.kernel.identifiers import sha256_hex
from worker.store import schema
from worker.store.base import StoreBase, as_utc, chunks, utcnow


@dataclass(frozen=True)
class Webhook:
    """A delivery to record with the change it causes (same transaction: a replay finds it)."""

    webhook_id: str
    topic: str


@dataclass
class ErasureRequest:
    erasure_id: int | None
    #: False: the person was erased before and nothing new was held (a no-op)
    created: bool
    #: True: this webhook delivery was seen before; nothing was done
    duplicate: bool = False
    orders_deleted: int = 0
    customer_records: int = 0
    #: per mapping, identities the destination held (acknowledged or possibly, in flight)
    held: dict[str, int] = field(default_factory=dict)

    @property
    def anything_held(self) -> bool:
        return bool(self.orders_deleted or self.customer_records or any(self.held.values()))


@dataclass(frozen=True)
class ErasureProgress:
    erasure_id: int
    email_sha256: str
    kind: str
    origin: str
    requested_at: datetime
    completed_at: datetime | None
    #: mapping -> (held when requested, still held now)
    mappings: dict[str, tuple[int, int]]

    @property
    def status(self) -> str:
        return "complete" if self.completed_at is not None else "pending"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.erasure_id,
            "email_sha256": self.email_sha256,
            "kind": self.kind,
            "origin": self.origin,
            "status": self.status,
            "requested_at": self.requested_at.isoformat(timespec="seconds"),
            "completed_at": self.completed_at.isoformat(timespec="seconds") if self.completed_at else None,
            "mappings": {
                name: {"held": held, "remaining": left, "status": "complete" if left == 0 else "pending"}
                for name, (held, left) in sorted(self.mappings.items())
            },
        }


def _person_rows(table: Any, email: str, keys: Sequence[str]) -> ColumnElement[bool]:
    """Rows of a membership table (acknowledged / in flight) that hold the person, by any identity."""
    c = table.c
    if not email:
        return and_(c.erasure_id.is_(None), c.customer_key.in_(list(keys)))
    digest = sha256_hex(email)
    return and_(
        c.erasure_id.is_(None),
        or_(c.customer_key.in_(list(keys)), c.identity.in_([email, digest]), c.identity.like(f"%{digest}%")),
    )


class PrivacyQueries(StoreBase):
    # -- webhooks ----------------------------------------------------------------------------
    def webhook_seen(self, webhook_id: str) -> bool:
        w = schema.webhook_deliveries.c
        with self.engine.connect() as conn:
            return conn.execute(select(w.webhook_id).where(w.webhook_id == webhook_id)).first() is not None

    def _record_webhook(self, conn: Connection, webhook: Webhook | None, outcome: str) -> bool:
        """Insert the delivery; False when it was recorded before (the caller does nothing)."""
        if webhook is None:
            return True
        row = {"webhook_id": webhook.webhook_id, "topic": webhook.topic, "received_at": utcnow(), "outcome": outcome}
        return self._insert_ignore(conn, schema.webhook_deliveries, row, ["webhook_id"])

    def record_webhook(self, webhook: Webhook, outcome: str) -> bool:
        with self.engine.begin() as conn:
            return self._record_webhook(conn, webhook, outcome)

    # -- erasure -------------------------------------------------------------------------------
    def request_erasure(
        self,
        email: str | None,
        *,
        mappings: Iterable[str],
        origin: str,
        customer_ids: Sequence[str] = (),
        order_ids: Sequence[str] = (),
        webhook: Webhook | None = None,
    ) -> ErasureRequest:
        """Erase a person from the store at once; destinations follow.

        ``email`` (normalized) or ``customer_ids`` name them; without an email, the address stored
        for those customers is erased with them. ``order_ids`` are erased too (Shopify's
        ``orders_to_redact``).
        """
        c, o, p = schema.customers.c, schema.orders.c, schema.profiles.c
        with self.engine.begin() as conn:
            if not self._record_webhook(conn, webhook, "erasure"):
                return ErasureRequest(None, created=False, duplicate=True)
            if email is None and customer_ids:
                email = conn.execute(
                    select(c.email).where(c.customer_id.in_(list(customer_ids)), c.email.is_not(None))
                ).scalar()
            digest = sha256_hex(email) if email else sha256_hex(" ".join(sorted(customer_ids)))
            email = email or ""
            ids = set(customer_ids) | set(conn.execute(select(c.customer_id).where(c.email == email)).scalars())
            keys = [k for k in [email, *sorted(ids)] if k]
            # store webhooks about them not processed yet: they go too (processed ones hold no payload)
            w = schema.webhook_inbox.c
            about = [w.customer_id.in_(sorted(ids))] + ([w.email_sha256 == sha256_hex(email)] if email else [])
            conn.execute(delete(schema.webhook_inbox).where(w.processed_at.is_(None), or_(*about)))
            order_ids = list(
                conn.execute(
                    select(o.order_id).where(
                        or_(o.email == email, o.customer_id.in_(keys), o.order_id.in_(list(order_ids)))
                    )
                ).scalars()
            )
            customer_rows = int(
                conn.execute(
                    select(func.count()).select_from(schema.customers).where(c.customer_id.in_(keys))
                ).scalar_one()
            )
            held: dict[str, int] = {name: 0 for name in mappings}
            for table in (schema.acknowledged, schema.inflight):
                counted = conn.execute(
                    select(table.c.mapping, func.count())
                    .where(_person_rows(table, email, keys))
                    .group_by(table.c.mapping)
                ).all()
                for mapping, count in counted:
                    held[mapping] = held.get(mapping, 0) + int(count)
            profiles = int(
                conn.execute(
                    select(func.count())
                    .select_from(schema.profiles)
                    .where(or_(p.customer_key.in_(keys), p.email == email))
                ).scalar_one()
            )
            previous = conn.execute(
                select(schema.erasures.c.id)
                .where(schema.erasures.c.email_sha256 == digest, schema.erasures.c.kind == "person")
                .order_by(schema.erasures.c.id.desc())
            ).first()
            if previous is not None and not (order_ids or customer_rows or profiles or any(held.values())):
                return ErasureRequest(int(previous.id), created=False)

            for chunk in chunks(order_ids):
                conn.execute(delete(schema.order_lines).where(schema.order_lines.c.order_id.in_(chunk)))
                conn.execute(delete(schema.orders).where(o.order_id.in_(chunk)))
            conn.execute(delete(schema.customers).where(or_(c.customer_id.in_(keys), c.email == email)))
            conn.execute(delete(schema.profiles).where(or_(p.customer_key.in_(keys), p.email == email)))
            conn.execute(delete(schema.segment_members).where(schema.segment_members.c.customer_key.in_(keys)))
            # parts of a split sync still owed: an add is not sent, and a removal is served by the
            # erasure's own (the acknowledged row, marked below, stays until the destination answers)
            digest_of = sha256_hex(email) if email else None
            self._drop_from_parts(  # type: ignore[attr-defined]
                conn,
                lambda identity, key: (
                    key in keys or (digest_of is not None and (identity in (email, digest_of) or digest_of in identity))
                ),
            )
            r = schema.rejected.c
            held_by_rejection = [r.customer_key.in_(keys)]
            if email:
                held_by_rejection += [r.identity.in_([email, digest]), r.identity.like(f"%{digest}%")]
            conn.execute(delete(schema.rejected).where(or_(*held_by_rejection)))
            now = utcnow()
            detail = {"customer_ids": sorted(ids), "orders_deleted": len(order_ids), "customer_records": customer_rows}
            erasure_id = self._insert_erasure(conn, digest, "person", origin, detail, now)
            for table in (schema.acknowledged, schema.inflight):
                conn.execute(
                    update(table)
                    .where(_person_rows(table, email, keys))
                    .values(erasure_id=erasure_id, customer_key=f"erased:{erasure_id}")
                )
            self._insert_targets(conn, erasure_id, held, now)
            self._bump_for_deletes(conn)
        return ErasureRequest(
            erasure_id,
            created=True,
            orders_deleted=len(order_ids),
            customer_records=customer_rows,
            held=held,
        )

    def redact_shop(
        self, shop_sha256: str, *, mappings: Iterable[str], origin: str, webhook: Webhook | None = None
    ) -> ErasureRequest:
        """Shopify's ``shop/redact``: everything held for the shop goes; every audience is emptied."""
        with self.engine.begin() as conn:
            if not self._record_webhook(conn, webhook, "shop erasure"):
                return ErasureRequest(None, created=False, duplicate=True)
            orders = int(conn.execute(select(func.count()).select_from(schema.orders)).scalar_one())
            customers = int(conn.execute(select(func.count()).select_from(schema.customers)).scalar_one())
            held: dict[str, int] = {name: 0 for name in mappings}
            for table in (schema.acknowledged, schema.inflight):
                rows = conn.execute(
                    select(table.c.mapping, func.count()).where(table.c.erasure_id.is_(None)).group_by(table.c.mapping)
                ).all()
                for mapping, count in rows:
                    held[mapping] = held.get(mapping, 0) + int(count)
            for table in (
                schema.order_lines,
                schema.orders,
                schema.customers,
                schema.profiles,
                schema.segment_members,
                schema.rejected,
                schema.problems,
                schema.watermarks,
                schema.data_requests,
                schema.webhook_inbox,
            ):
                conn.execute(delete(table))
            conn.execute(
                update(schema.sync_parts)
                .where(schema.sync_parts.c.state == "pending")
                .values(state="failed", error="the shop was erased", finished_at=utcnow(), items="[]")
            )
            now = utcnow()
            detail = {"orders_deleted": orders, "customer_records": customers}
            erasure_id = self._insert_erasure(conn, shop_sha256, "shop", origin, detail, now)
            for table in (schema.acknowledged, schema.inflight):
                conn.execute(
                    update(table)
                    .where(table.c.erasure_id.is_(None))
                    .values(erasure_id=erasure_id, customer_key=f"erased:{erasure_id}")
                )
            self._insert_targets(conn, erasure_id, held, now)
            self._bump_for_deletes(conn)
        return ErasureRequest(erasure_id, created=True, orders_deleted=orders, customer_records=customers, held=held)

    def _insert_erasure(
        self, conn: Connection, digest: str, kind: str, origin: str, detail: dict[str, Any], now: datetime
    ) -> int:
        result = conn.execute(
            schema.erasures.insert().values(
                email_sha256=digest, kind=kind, origin=origin, requested_at=now, detail=json.dumps(detail)
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def _insert_targets(self, conn: Connection, erasure_id: int, held: dict[str, int], now: datetime) -> None:
        rows = [
            {"erasure_id": erasure_id, "mapping": m, "held": n, "completed_at": None if n else now}
            for m, n in sorted(held.items())
        ]
        if rows:
            conn.execute(schema.erasure_targets.insert(), rows)
        if not any(held.values()):
            conn.execute(update(schema.erasures).where(schema.erasures.c.id == erasure_id).values(completed_at=now))

    def _bump_for_deletes(self, conn: Connection) -> None:
        """Rows were deleted: snapshots reload and recompute results are rewritten."""
        state, results = schema.ingest_state.c, schema.results_state.c
        conn.execute(update(schema.ingest_state).values(generation=state.generation + 1))
        conn.execute(update(schema.results_state).values(version=results.version + 1))

    def settle_erasures(self) -> list[int]:
        """Close targets whose marked rows are all gone, then erasures whose targets all are; returns those."""
        t, e = schema.erasure_targets.c, schema.erasures.c
        now = utcnow()
        done: list[int] = []
        with self.engine.begin() as conn:
            pending = conn.execute(select(t.erasure_id, t.mapping).where(t.completed_at.is_(None))).all()
            for erasure_id, mapping in pending:
                if self._remaining(conn, erasure_id, mapping) == 0:
                    conn.execute(
                        update(schema.erasure_targets)
                        .where(t.erasure_id == erasure_id, t.mapping == mapping)
                        .values(completed_at=now)
                    )
            open_ids = conn.execute(select(e.id).where(e.completed_at.is_(None))).scalars().all()
            for erasure_id in open_ids:
                left = conn.execute(
                    select(func.count()).where(t.erasure_id == erasure_id, t.completed_at.is_(None))
                ).scalar_one()
                if not left:
                    conn.execute(update(schema.erasures).where(e.id == erasure_id).values(completed_at=now))
                    done.append(int(erasure_id))
        return done

    @staticmethod
    def _remaining(conn: Connection, erasure_id: int, mapping: str) -> int:
        total = 0
        for table in (schema.acknowledged, schema.inflight):
            total += int(
                conn.execute(
                    select(func.count())
                    .select_from(table)
                    .where(table.c.erasure_id == erasure_id, table.c.mapping == mapping)
                ).scalar_one()
            )
        return total

    def erasures(self, limit: int = 100) -> list[ErasureProgress]:
        """Newest first, with per-mapping progress."""
        e, t = schema.erasures.c, schema.erasure_targets.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.erasures).order_by(e.id.desc()).limit(limit)).all()
            out = []
            for row in rows:
                targets = conn.execute(select(t.mapping, t.held).where(t.erasure_id == row.id)).all()
                out.append(
                    ErasureProgress(
                        erasure_id=int(row.id),
                        email_sha256=row.email_sha256,
                        kind=row.kind,
                        origin=row.origin,
                        requested_at=as_utc(row.requested_at) or utcnow(),
                        completed_at=as_utc(row.completed_at),
                        mappings={m: (int(h), self._remaining(conn, int(row.id), m)) for m, h in targets},
                    )
                )
        return out

    def erasure(self, erasure_id: int) -> ErasureProgress | None:
        return next((e for e in self.erasures(limit=10_000) if e.erasure_id == erasure_id), None)

    def suppressed(self) -> tuple[set[str], set[str]]:
        """Email hashes and customer ids erased: never stored again when a source sends them."""
        hashes: set[str] = set()
        ids: set[str] = set()
        e = schema.erasures.c
        with self.engine.connect() as conn:
            for digest, detail in conn.execute(select(e.email_sha256, e.detail).where(e.kind == "person")):
                hashes.add(digest)
                ids.update(json.loads(detail or "{}").get("customer_ids", []))
        return hashes, ids

    # -- data requests ---------------------------------------------------------------------------
    def record_data_request(
        self, email_sha256: str, customer_ids: Sequence[str], *, origin: str, webhook: Webhook | None = None
    ) -> int | None:
        """Record a request for what we hold about a person; None when the webhook was a replay."""
        with self.engine.begin() as conn:
            if not self._record_webhook(conn, webhook, "data request"):
                return None
            result = conn.execute(
                schema.data_requests.insert().values(
                    email_sha256=email_sha256,
                    customer_ids=json.dumps(sorted(customer_ids)),
                    origin=origin,
                    requested_at=utcnow(),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def mark_exported(self, email_sha256: str) -> int:
        d = schema.data_requests.c
        with self.engine.begin() as conn:
            result = conn.execute(
                update(schema.data_requests)
                .where(d.email_sha256 == email_sha256, d.exported_at.is_(None))
                .values(exported_at=utcnow())
            )
        return int(result.rowcount or 0)

    def data_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        d = schema.data_requests.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.data_requests).order_by(d.id.desc()).limit(limit)).all()
        return [
            {
                "id": int(r.id),
                "email_sha256": r.email_sha256,
                "origin": r.origin,
                "requested_at": (as_utc(r.requested_at) or utcnow()).isoformat(timespec="seconds"),
                "exported_at": (as_utc(r.exported_at) or utcnow()).isoformat(timespec="seconds")
                if r.exported_at
                else None,
            }
            for r in rows
        ]
