"""The store-webhook inbox: deliveries kept durably on arrival, processed after the answer.

A delivery is one row, unique by ``X-Shopify-Webhook-Id`` (a replay finds it and changes nothing). Once
processed its payload (PII) is cleared and the row stays with its outcome. Besides the inbox itself:
the two writes a webhook makes that a pulled page never does (a consent change on its own, a deleted
customer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from worker.store import schema
from worker.store.base import StoreBase, as_utc, chunks, utcnow


@dataclass(frozen=True)
class InboxRow:
    id: int
    webhook_id: str
    topic: str
    received_at: datetime
    payload: str


class InboxQueries(StoreBase):
    def inbox_add(
        self, webhook_id: str, topic: str, payload: str, *, email_sha256: str | None, customer_id: str | None
    ) -> bool:
        """Keep a delivery; False when this webhook id was received before (nothing is written)."""
        row = {
            "webhook_id": webhook_id,
            "topic": topic,
            "received_at": utcnow(),
            "payload": payload,
            "email_sha256": email_sha256,
            "customer_id": customer_id,
        }
        with self.engine.begin() as conn:
            return self._insert_ignore(conn, schema.webhook_inbox, row, ["webhook_id"])

    def inbox_pending(self, limit: int = 500, after: int = 0) -> list[InboxRow]:
        """Unprocessed deliveries in arrival order, after row ``after``."""
        w = schema.webhook_inbox.c
        query = (
            select(w.id, w.webhook_id, w.topic, w.received_at, w.payload)
            .where(w.processed_at.is_(None), w.id > after)
            .order_by(w.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            InboxRow(int(r.id), r.webhook_id, r.topic, as_utc(r.received_at) or utcnow(), r.payload or "") for r in rows
        ]

    def inbox_pending_count(self) -> int:
        w = schema.webhook_inbox.c
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(w.processed_at.is_(None))).scalar_one())

    def inbox_settle(self, outcomes: Sequence[tuple[int, str]]) -> None:
        """Mark deliveries processed with their outcome and clear their payloads (they hold PII)."""
        w = schema.webhook_inbox.c
        now = utcnow()
        with self.engine.begin() as conn:
            for row_id, outcome in outcomes:
                conn.execute(
                    update(schema.webhook_inbox)
                    .where(w.id == row_id)
                    .values(payload=None, processed_at=now, outcome=outcome[:200])
                )

    def inbox_outcomes(self) -> dict[str, dict[str, Any]]:
        """Every delivery by webhook id: topic, outcome, processed or not, payload still held or not."""
        w = schema.webhook_inbox.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(w.webhook_id, w.topic, w.outcome, w.processed_at, w.payload)).all()
        return {
            r.webhook_id: {
                "topic": r.topic,
                "outcome": r.outcome,
                "processed": r.processed_at is not None,
                "payload_held": r.payload is not None,
            }
            for r in rows
        }

    # -- what only a webhook writes ---------------------------------------------------------------
    def stored_consents(self, customer_ids: Sequence[str]) -> dict[str, tuple[str, datetime | None]]:
        """Stored email consent (state, changed at) of these customers."""
        c = schema.customers.c
        found: dict[str, tuple[str, datetime | None]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(customer_ids)):
                query = select(c.customer_id, c.email_consent, c.consent_updated_at).where(c.customer_id.in_(chunk))
                for ident, state, at in conn.execute(query):
                    found[ident] = (state, as_utc(at))
        return found

    def apply_consent(self, customer_id: str, state: str, at: datetime) -> str:
        """A consent change on its own: written unless the stored one is newer. Returns ``applied``,
        ``stale`` or ``unknown customer``."""
        c = schema.customers.c
        with self.engine.begin() as conn:
            stored = conn.execute(select(c.consent_updated_at).where(c.customer_id == customer_id)).first()
            if stored is None:
                return "unknown customer"
            known = as_utc(stored.consent_updated_at)
            if known is not None and known > (as_utc(at) or at):
                return "stale"
            seq, _ = self._reserve(conn)
            conn.execute(
                update(schema.customers)
                .where(c.customer_id == customer_id)
                .values(email_consent=state, consent_updated_at=at, ingest_seq=seq)
            )
        return "applied"

    def delete_customer(self, customer_id: str) -> bool:
        """``customers/delete``: the customer is gone from the shop (Shopify deletes only customers
        without orders); their row goes, and snapshots reload."""
        state = schema.ingest_state.c
        with self.engine.begin() as conn:
            result = conn.execute(delete(schema.customers).where(schema.customers.c.customer_id == customer_id))
            if not result.rowcount:
                return False
            conn.execute(update(schema.ingest_state).values(generation=state.generation + 1))
        return True

    def _reserve(self, conn: Any) -> tuple[int, int]:
        state = schema.ingest_state.c
        conn.execute(update(schema.ingest_state).values(seq=state.seq + 1))
        seq, next_row = conn.execute(select(state.seq, state.next_row)).one()
        return int(seq), int(next_row)
