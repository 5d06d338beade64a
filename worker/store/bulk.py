"""Bulk exports: their progress rows, the staged line items, and attaching those to their orders."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update

from worker.store import schema
from worker.store.base import as_utc, chunks, utcnow
from worker.store.source_data import SourceDataQueries

#: phases after which a row is history, not work
FINISHED_PHASES = ("done", "fell_back", "abandoned")


#: the key prefix of the staged "line" that marks a refused (or erased) order: its lines go with it
REJECTED = "~refused "


def rejected_marker(ref: str) -> dict[str, Any]:
    return {"line_key": (REJECTED + ref)[:128], "parent_id": ref[:128], "product_id": None, "sku": None, "quantity": 0}


@dataclass
class BulkRow:
    id: int
    source: str
    stream: str
    operation_id: str | None
    status: str
    phase: str
    exported_from: datetime | None
    started_at: datetime
    url: str | None
    url_received_at: datetime | None
    partial: bool
    file_size: int | None
    downloaded: int
    ingested: int
    object_count: int
    counts: dict[str, Any]
    error: str | None
    finished_at: datetime | None


def _row(row: Any) -> BulkRow:
    return BulkRow(
        id=int(row.id),
        source=row.source,
        stream=row.stream,
        operation_id=row.operation_id,
        status=row.status,
        phase=row.phase,
        exported_from=as_utc(row.exported_from),
        started_at=as_utc(row.started_at) or row.started_at,
        url=row.url,
        url_received_at=as_utc(row.url_received_at),
        partial=bool(row.partial),
        file_size=row.file_size,
        downloaded=int(row.downloaded or 0),
        ingested=int(row.ingested or 0),
        object_count=int(row.object_count or 0),
        counts=json.loads(row.counts or "{}"),
        error=row.error,
        finished_at=as_utc(row.finished_at),
    )


class BulkQueries(SourceDataQueries):
    def bulk_active(self, source: str, stream: str) -> BulkRow | None:
        """The export of ``stream`` still being worked on, if any (at most one per stream)."""
        t = schema.bulk_operations
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t)
                .where(t.c.source == source, t.c.stream == stream, t.c.phase.not_in(FINISHED_PHASES))
                .order_by(t.c.id.desc())
                .limit(1)
            ).first()
        return _row(row) if row is not None else None

    def bulk_create(self, source: str, stream: str) -> BulkRow:
        t = schema.bulk_operations
        with self.engine.begin() as conn:
            new_id = conn.execute(
                t.insert()
                .values(
                    source=source,
                    stream=stream,
                    status="CREATED",
                    phase="starting",
                    started_at=utcnow(),
                    partial=False,
                    downloaded=0,
                    ingested=0,
                    object_count=0,
                    counts="{}",
                )
                .returning(t.c.id)
            ).scalar_one()
            row = conn.execute(select(t).where(t.c.id == new_id)).one()
        return _row(row)

    def bulk_update(self, row_id: int, **values: Any) -> None:
        if "counts" in values and not isinstance(values["counts"], str):
            values["counts"] = json.dumps(values["counts"], sort_keys=True)
        with self.engine.begin() as conn:
            conn.execute(update(schema.bulk_operations).where(schema.bulk_operations.c.id == row_id).values(**values))

    def bulk_history(self, source: str | None = None, limit: int = 20) -> list[BulkRow]:
        t = schema.bulk_operations
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(t.c.source == source)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def stage_bulk_lines(self, operation: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Line items held until the whole file is read; idempotent (a chunk read twice adds nothing)."""
        if not rows:
            return
        with self.engine.begin() as conn:
            self._upsert(
                conn, schema.bulk_lines, [{**r, "operation": operation} for r in rows], ["operation", "line_key"]
            )

    def merge_bulk_lines(self, operation: int) -> tuple[int, int, int]:
        """Attach the staged line items to their orders, replacing what those orders held, in one
        transaction; the orders are re-stamped so the columnar snapshot re-reads their lines.
        Returns (lines attached, orders given lines, lines whose order is not stored)."""
        bl, ol = schema.bulk_lines, schema.order_lines
        with self.engine.begin() as conn:
            stored = select(schema.orders.c.order_id)
            refused = select(bl.c.parent_id).where(
                bl.c.operation == operation, bl.c.line_key.startswith(REJECTED, autoescape=True)
            )
            orphans = int(
                conn.execute(
                    select(func.count())
                    .select_from(bl)
                    .where(
                        bl.c.operation == operation,
                        ~bl.c.line_key.startswith(REJECTED, autoescape=True),
                        bl.c.parent_id.not_in(stored),
                        bl.c.parent_id.not_in(refused),
                    )
                ).scalar_one()
            )
            parents = (
                select(bl.c.parent_id)
                .where(
                    bl.c.operation == operation,
                    ~bl.c.line_key.startswith(REJECTED, autoescape=True),
                    bl.c.parent_id.in_(stored),
                )
                .distinct()
            )
            orders = [r[0] for r in conn.execute(parents)]
            for chunk in chunks(orders):
                conn.execute(delete(ol).where(ol.c.order_id.in_(chunk)))
            attached = conn.execute(
                text(
                    "INSERT INTO order_lines (order_id, line_no, product_id, sku, quantity) "
                    "SELECT parent_id, ROW_NUMBER() OVER (PARTITION BY parent_id ORDER BY line_key) - 1, "
                    "product_id, sku, quantity FROM bulk_lines "
                    "WHERE operation = :op AND substr(line_key, 1, 9) != :marker "
                    "AND parent_id IN (SELECT order_id FROM orders)"
                ),
                {"op": operation, "marker": REJECTED},
            ).rowcount
            seq, _ = self.reserve_ingest(conn, 0)
            for chunk in chunks(orders):
                conn.execute(update(schema.orders).where(schema.orders.c.order_id.in_(chunk)).values(ingest_seq=seq))
            conn.execute(delete(bl).where(bl.c.operation == operation))
        return int(attached or 0), len(orders), orphans

    def drop_staged_lines(self, operation: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(schema.bulk_lines).where(schema.bulk_lines.c.operation == operation))
