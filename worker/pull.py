"""The pull step: every stream of the source since its watermark, validated, stored page by page.

A page is validated (one rule set for every source), fitted to the schema, stored, and only then is
the watermark moved. A record the database still refuses is isolated (the page is split until the
record stands alone), counted and reported, and never blocks the records after it. A database that
cannot be reached fails the run, visibly, without moving the watermark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from connectors.kernel.errors import ConfigError, ConnectorError
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Page
from connectors.kernel.redact import redact
from connectors.kernel.runtime import Runtime
from connectors.kernel.source import Source
from worker.config import AppConfig
from worker.factory import build_source
from worker.ingest import Validated, validate_customers, validate_orders
from worker.locks import LockLost
from worker.settings import Settings
from worker.store import Store, schema

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def describe_error(exc: BaseException) -> str:
    """An error for a run row or a log line: its class and a redacted first line, never statement
    parameters or values (a database error's detail can quote the row it refused)."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    if isinstance(exc, SQLAlchemyError):
        text = text.split("[SQL:")[0].strip()
    return f"{type(inner).__name__}: {redact(text)[:300]}" if text else type(inner).__name__


def _bulk_first(
    store: Store,
    source: Source,
    settings: Settings,
    runtime: Runtime,
    result: PullResult,
    run_id: int,
    progress: Progress | None,
    deadline: float | None,
    force: bool,
) -> None:
    """The bulk path, when the source has one: its problems go to this run, like a page's."""
    export = source.bulk_export()
    if export is None:
        return
    from worker.backfill import Backfill

    suppression = store.suppressed()
    backfill = Backfill(
        store,
        source,
        export,
        settings,
        ingest_page=lambda page: ingest_page(store, page, settings, suppression, result),
        report=lambda problems: record_problems(store, run_id, source.kind, result, problems),
        progress=progress,
        deadline=deadline,
        sleep=runtime.sleep,
    )
    try:
        outcome = backfill.run(force=force)
    finally:
        result.bulk = backfill.outcome.streams
    result.more = outcome.more


@dataclass
class PullResult:
    status: str = "ok"
    customers: int = 0
    orders: int = 0
    #: of the stored records: new to us, changed since we stored them, re-read unchanged (overlap window)
    new: dict[str, int] = field(default_factory=lambda: {"customers": 0, "orders": 0})
    changed: dict[str, int] = field(default_factory=lambda: {"customers": 0, "orders": 0})
    reread: dict[str, int] = field(default_factory=lambda: {"customers": 0, "orders": 0})
    #: older than the version already stored (a late webhook got there first): left as stored
    stale: dict[str, int] = field(default_factory=lambda: {"customers": 0, "orders": 0})
    rejected: int = 0
    warnings: int = 0
    pages: int = 0
    #: records of erased people, dropped on arrival
    suppressed: int = 0
    #: customers whose last email open/click moved forward
    engagement: int = 0
    seconds: float = 0.0
    error: str | None = None
    run_id: int | None = None
    #: stopped at the time budget with pages left: a continuation goes on from the watermark
    more: bool = False
    source_stats: dict[str, Any] = field(default_factory=dict)
    #: per stream, what a bulk export did (empty when none ran)
    bulk: dict[str, dict[str, Any]] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "orders": self.orders,
            "pulled": self.customers + self.orders,
            "new": dict(self.new),
            "changed": dict(self.changed),
            "reread": dict(self.reread),
            "stale": dict(self.stale),
            "bad_records": self.rejected,
            "warnings": self.warnings,
            "pages": self.pages,
            "suppressed": self.suppressed,
            "engagement": self.engagement,
            "seconds": round(self.seconds, 3),
            "more": self.more,
            **({"bulk": self.bulk} if self.bulk else {}),
            **{f"source_{k}": v for k, v in self.source_stats.items()},
        }

    def summary(self) -> str:
        """One line a person can reconcile: what was read, what it was, what pacing cost."""
        parts = []
        for stream in ("customers", "orders"):
            stored = getattr(self, stream)
            parts.append(
                f"{stored:,} {stream} ({self.new[stream]:,} new, {self.changed[stream]:,} changed, "
                f"{self.reread[stream]:,} re-read unchanged in the overlap window)"
            )
        line = "pulled " + " and ".join(parts)
        for stream, bulk in self.bulk.items():
            line += f"; {stream} bulk export {bulk.get('phase')}"
            if bulk.get("records"):
                line += f" ({int(bulk['records']):,} records"
                line += f", {int(bulk['lines']):,} line items)" if bulk.get("lines") else ")"
        stale = sum(self.stale.values())
        if stale:
            line += f"; {stale:,} older than the stored version (left as stored)"
        paced = float(self.source_stats.get("paced_seconds") or 0) + float(self.source_stats.get("waited_seconds") or 0)
        if self.seconds and paced / self.seconds >= 0.2:
            line += f"; waiting for the API's rate limit took {paced:.1f}s of {self.seconds:.1f}s"
        return line


def suppress(checked: Validated, hashes: set[str], ids: set[str]) -> int:
    """Drop rows of erased people (by email hash or customer id); returns how many."""

    def erased(row: dict[str, Any]) -> bool:
        email = row.get("email")
        return row.get("customer_id") in ids or (email is not None and sha256_hex(email) in hashes)

    before = len(checked.customers) + len(checked.orders)
    checked.customers = [r for r in checked.customers if not erased(r)]
    kept = [r for r in checked.orders if not erased(r)]
    kept_ids = {r["order_id"] for r in kept}
    checked.lines = [r for r in checked.lines if r["order_id"] in kept_ids]
    checked.orders = kept
    return before - len(checked.customers) - len(checked.orders)


def _unreachable(exc: DBAPIError) -> bool:
    """The database itself is gone (connection lost, server down), as opposed to refusing one row."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


def store_isolating(
    write: Callable[[Sequence[dict[str, Any]]], object], rows: Sequence[dict[str, Any]], key: str
) -> list[tuple[str, str]]:
    """Write ``rows``; when the database refuses the batch, split it until each refused record stands
    alone. Returns (id, reason) of the records that could not be stored."""
    if not rows:
        return []
    try:
        write(rows)
        return []
    except DBAPIError as exc:
        if _unreachable(exc):
            raise
        if len(rows) == 1:
            return [(str(rows[0][key])[:200], f"could not be stored: {describe_error(exc)}")]
    middle = len(rows) // 2
    return store_isolating(write, rows[:middle], key) + store_isolating(write, rows[middle:], key)


def _classify(
    store: Store, table: Any, key: str, rows: Sequence[dict[str, Any]], result: PullResult, stream: str
) -> None:
    known = store.known_versions(table, key, [r[key] for r in rows])
    for row in rows:
        before = known.get(row[key])
        if before is None:
            bucket = result.new
        elif before == row["updated_at"]:
            bucket = result.reread
        else:
            bucket = result.changed if before < row["updated_at"] else result.stale
        bucket[stream] += 1


def store_page(store: Store, checked: Validated, result: PullResult) -> list[tuple[str, str]]:
    """Store one validated page; returns the records the database refused, with reasons."""
    _classify(store, schema.customers, "customer_id", checked.customers, result, "customers")
    _classify(store, schema.orders, "order_id", checked.orders, result, "orders")
    refused_customers = store_isolating(store.upsert_customers, checked.customers, "customer_id")
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in checked.lines:
        lines.setdefault(line["order_id"], []).append(line)

    def write_orders(rows: Sequence[dict[str, Any]]) -> None:
        store.upsert_orders(rows, [line for r in rows for line in lines.get(r["order_id"], [])])

    refused_orders = store_isolating(write_orders, checked.orders, "order_id")
    result.customers += len(checked.customers) - len(refused_customers)
    result.orders += len(checked.orders) - len(refused_orders)
    return refused_customers + refused_orders


def ingest_page(
    store: Store, page: Page, settings: Settings, suppression: tuple[set[str], set[str]], result: PullResult
) -> tuple[Validated, list[tuple[str, str]]]:
    """The path of every page a source gives (paged or a bulk export's chunk): validate, drop
    erased people, store. Returns what was stored and the problems (the source's, the
    validator's, the database's)."""
    checked = Validated()
    validate_customers(page.customers, settings.default_phone_region, into=checked)
    validate_orders(page.orders, into=checked)
    hashes, ids = suppression
    if hashes or ids:
        result.suppressed += suppress(checked, hashes, ids)
    refused = store_page(store, checked, result)
    return checked, [(p.ref, p.reason) for p in page.problems] + checked.rejected + refused


def record_problems(store: Store, run_id: int, kind: str, result: PullResult, problems: list[tuple[str, str]]) -> None:
    """Keep a run's problems; those marked ``warning:`` (a field cleared, an old store re-read in
    full) count as warnings, the rest as bad records."""
    store.add_problems(run_id, kind, problems)
    warned = sum(1 for _, reason in problems if reason.startswith("warning:"))
    result.warnings += warned
    result.rejected += len(problems) - warned


def pull(
    store: Store,
    config: AppConfig,
    settings: Settings,
    runtime: Runtime,
    *,
    progress: Progress | None = None,
    task_id: str | None = None,
    reread_hours: float = 0.0,
    now: datetime | None = None,
    deadline: float | None = None,
    force_bulk: bool = False,
) -> PullResult:
    """Incremental pull of every stream since its watermark (minus the overlap window); a stream
    never pulled (or every stream, with ``force_bulk``) is first exported in bulk when the source
    can (``worker/backfill.py``)."""
    store.mark_interrupted("pull", None)
    run_id = store.start_run("pull", None, task_id)
    result = PullResult(run_id=run_id)
    started = time.monotonic()
    source = build_source(config.source, settings, runtime, store)
    overlap = timedelta(minutes=settings.overlap_minutes)
    reported = 0.0
    try:
        suppression = store.suppressed()
        _bulk_first(store, source, settings, runtime, result, run_id, progress, deadline, force_bulk)
        for stream in source.streams:
            if result.more:
                break
            watermark = store.get_watermark(source.kind, stream)
            since = watermark - overlap if watermark else None
            if since is not None and reread_hours:
                # the daily reconcile re-reads further back than the overlap: late edits, clock skew
                since = min(since, (now or utc_now()) - timedelta(hours=reread_hours))
            for page in source.pull(stream, since):
                checked, problems = ingest_page(store, page, settings, suppression, result)
                warnings = [(r, f"warning: {w}") for r, w in checked.warnings]
                record_problems(store, run_id, source.kind, result, problems + warnings)
                result.pages += 1
                if page.max_updated_at and (watermark is None or page.max_updated_at > watermark):
                    watermark = page.max_updated_at
                    store.set_watermark(source.kind, stream, watermark)
                if time.monotonic() - reported >= 1.0:  # live progress in the run row, about once a second
                    store.update_run(run_id, result.counts())
                    reported = time.monotonic()
                if progress:
                    progress({"stream": stream, **result.counts()})
                if deadline is not None and time.monotonic() >= deadline:
                    result.more = True
                    break
            if result.more:
                break
        if config.engagement and not result.more:
            from worker.engagement import pull_engagement

            result.engagement = pull_engagement(store, config, settings, runtime, now or utc_now())
    except LockLost as exc:  # another worker may hold the cycle now: stop, say so, and let the task retry
        result.status, result.error = "interrupted", str(exc)
        raise
    except ConfigError as exc:
        result.status, result.error = "needs_attention", exc.message
    except ConnectorError as exc:
        result.status, result.error = "failed", exc.message
    except Exception as exc:  # a database error, or a bug: the run says so instead of "ok"
        result.status, result.error = "failed", describe_error(exc)
        log.error("pull failed: %s", result.error)
    finally:
        result.seconds = time.monotonic() - started
        result.source_stats = source.stats()
        source.close()
        if result.status == "ok" and result.rejected:
            result.status = "partial"
        try:
            store.finish_run(run_id, result.status, result.counts(), result.error)
        except SQLAlchemyError as exc:  # the database is gone: the next run closes this row as interrupted
            log.error("could not record the pull's outcome (%s): %s", result.status, describe_error(exc))
    return result
