"""Writes and reads of pulled data: orders, lines, customers, engagement, watermarks, frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.engine import Connection

from worker.segments.frames import CUSTOMER_COLUMNS, LINE_COLUMNS, ORDER_COLUMNS
from worker.store import schema
from worker.store.base import StoreBase, as_utc, chunks, utcnow


class SourceDataQueries(StoreBase):
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

    def _stamped(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        seq, first = self.reserve_ingest(conn, len(rows))
        return [{**row, "ingest_seq": seq, "row_no": first + i} for i, row in enumerate(rows)]

    def _not_older(
        self, conn: Connection, table: Table, key: str, rows: Sequence[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """The rows at least as new as what is stored: the newest ``updated_at`` wins, whichever of
        a pull page, an overlap re-read or a late webhook arrives last."""
        stored: dict[str, datetime] = {}
        for chunk in chunks([r[key] for r in rows]):
            for ident, updated in conn.execute(select(table.c[key], table.c.updated_at).where(table.c[key].in_(chunk))):
                stored[ident] = as_utc(updated) or updated
        return [r for r in rows if (known := stored.get(r[key])) is None or (as_utc(r["updated_at"]) or known) >= known]

    def upsert_customers(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Customers upserted by id unless the stored version is newer; returns how many were written."""
        if not rows:
            return 0
        with self.engine.begin() as conn:
            rows = self._not_older(conn, schema.customers, "customer_id", rows)
            if rows:
                self._upsert(conn, schema.customers, self._stamped(conn, rows), ["customer_id"], keep=("row_no",))
        return len(rows)

    def upsert_orders(self, rows: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]]) -> int:
        """Orders upserted by id (unless the stored version is newer); their lines replaced as a whole
        (an edit can drop a line). Returns how many orders were written."""
        if not rows:
            return 0
        with self.engine.begin() as conn:
            rows = self._not_older(conn, schema.orders, "order_id", rows)
            if not rows:
                return 0
            self._upsert(conn, schema.orders, self._stamped(conn, rows), ["order_id"], keep=("row_no",))
            ids = [r["order_id"] for r in rows]
            for chunk in chunks(ids):
                conn.execute(delete(schema.order_lines).where(schema.order_lines.c.order_id.in_(chunk)))
            written = set(ids)
            kept = [line for line in lines if line["order_id"] in written]
            for chunk in chunks(kept):
                conn.execute(schema.order_lines.insert(), list(chunk))
        return len(rows)

    def known_versions(self, table: Table, key: str, ids: Sequence[str]) -> dict[str, datetime]:
        """``updated_at`` of the rows of ``ids`` already stored (to tell new, changed and re-read apart)."""
        found: dict[str, datetime] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(ids)):
                for ident, updated in conn.execute(
                    select(table.c[key], table.c.updated_at).where(table.c[key].in_(chunk))
                ):
                    found[ident] = as_utc(updated) or updated
        return found

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
