"""One cycle's steps (pull, recompute, sync), each recording a run row. Celery tasks and the
in-process ``run`` command both call these; nothing here knows how it was scheduled."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from connectors.destinations.base import Destination
from connectors.errors import ConfigError, ConnectorError
from connectors.identifiers import sha256_hex
from connectors.records import Consent
from connectors.runtime import Runtime
from worker.config import AppConfig
from worker.factory import build_destination, build_source
from worker.ingest import Validated, validate_customers, validate_orders
from worker.segments import segment_masks, table_from_facts
from worker.settings import Settings
from worker.store import Store
from worker.store.persist import persist
from worker.store.snapshot import snapshot_for
from worker.sync import MappingSync, Progress, SyncResult

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PullResult:
    status: str = "ok"
    customers: int = 0
    orders: int = 0
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
    source_stats: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "orders": self.orders,
            "pulled": self.customers + self.orders,
            "bad_records": self.rejected,
            "warnings": self.warnings,
            "pages": self.pages,
            "suppressed": self.suppressed,
            "engagement": self.engagement,
            "seconds": round(self.seconds, 3),
            **{f"source_{k}": v for k, v in self.source_stats.items()},
        }


@dataclass
class RecomputeResult:
    sizes: dict[str, int]
    changes: dict[str, dict[str, int]]
    customers: int
    seconds: float
    run_id: int | None = None


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
) -> PullResult:
    """Incremental pull of every stream since its watermark (minus the overlap window)."""
    store.mark_interrupted("pull", None)
    run_id = store.start_run("pull", None, task_id)
    result = PullResult(run_id=run_id)
    started = time.monotonic()
    source = build_source(config.source, settings, runtime)
    overlap = timedelta(minutes=settings.overlap_minutes)
    erased_hashes, erased_ids = store.suppressed()
    try:
        for stream in source.streams:
            watermark = store.get_watermark(source.kind, stream)
            since = watermark - overlap if watermark else None
            if since is not None and reread_hours:
                # the daily reconcile re-reads further back than the overlap: late edits, clock skew
                since = min(since, (now or utc_now()) - timedelta(hours=reread_hours))
            for page in source.pull(stream, since):
                checked = Validated()
                validate_customers(page.customers, settings.default_phone_region, into=checked)
                validate_orders(page.orders, into=checked)
                if erased_hashes or erased_ids:
                    result.suppressed += suppress(checked, erased_hashes, erased_ids)
                if checked.customers:
                    store.upsert_customers(checked.customers)
                if checked.orders:
                    store.upsert_orders(checked.orders, checked.lines)
                problems = [(p.ref, p.reason) for p in page.problems] + checked.rejected
                store.add_problems(run_id, source.kind, problems + [(r, f"warning: {w}") for r, w in checked.warnings])
                result.customers += len(checked.customers)
                result.orders += len(checked.orders)
                result.rejected += len(problems)
                result.warnings += len(checked.warnings)
                result.pages += 1
                if page.max_updated_at and (watermark is None or page.max_updated_at > watermark):
                    watermark = page.max_updated_at
                    store.set_watermark(source.kind, stream, watermark)
                if progress:
                    progress({"stream": stream, **result.counts()})
        if config.engagement:
            from worker.engagement import pull_engagement

            result.engagement = pull_engagement(store, config, settings, runtime, now or utc_now())
    except ConfigError as exc:
        result.status, result.error = "needs_attention", exc.message
    except ConnectorError as exc:
        result.status, result.error = "failed", exc.message
    finally:
        result.seconds = time.monotonic() - started
        result.source_stats = source.stats()
        source.close()
        if result.status == "ok" and result.rejected:
            result.status = "partial"
        store.finish_run(run_id, result.status, result.counts(), result.error)
    return result


def profile_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Who each customer key is, for destinations: identifiers and consent."""
    frame = table.reindex(columns=["email", "phone", "first_name", "last_name", "country", "email_consent"])
    frame = frame.astype(object).where(frame.notna(), None)
    frame["email_consent"] = frame["email_consent"].fillna(Consent.UNKNOWN.value)
    frame.insert(0, "customer_key", frame.index.astype(str))
    return frame.to_dict("records")  # type: ignore[return-value]


def recompute(store: Store, config: AppConfig, now: datetime, *, task_id: str | None = None) -> RecomputeResult:
    """Rebuild the customer table and every segment from the store, as of ``now``."""
    store.mark_interrupted("recompute", None)
    run_id = store.start_run("recompute", None, task_id)
    started = time.monotonic()
    try:
        # columnar snapshot, refreshed incrementally from the store; results written as changes only
        # against the state this process last wrote (docs/performance.md)
        snap = snapshot_for(store)
        table = table_from_facts(snap.refresh(), reuse=True)
        written = snap.written
        masks = segment_masks(table, now, config.segments)
        snap.written = None  # dropped first: a failed write leaves the tables unknown
        changes, snap.written = persist(store, table, masks, written)
    except Exception as exc:
        store.finish_run(run_id, "failed", {}, f"{type(exc).__name__}: {exc}")
        raise
    sizes = {name: c["size"] for name, c in changes.items()}
    seconds = time.monotonic() - started
    store.finish_run(run_id, "ok", {"customers": len(table), "segments": sizes, "seconds": round(seconds, 3)}, None)
    return RecomputeResult(sizes, changes, len(table), seconds, run_id)


def sync_mapping(
    store: Store,
    config: AppConfig,
    settings: Settings,
    runtime: Runtime,
    name: str,
    *,
    full: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
    task_id: str | None = None,
    destination: Destination | None = None,
) -> SyncResult:
    """Push one mapping's diff (or a full replace) and record the run."""
    mapping = config.mapping(name)
    now = now or utc_now()
    paused = store.paused_until(name, now)
    store.mark_interrupted("sync", name)
    run_id = store.start_run("sync", name, task_id)
    if paused is not None and not full:
        result = SyncResult(name, status="paused", error=f"paused by the destination until {paused.isoformat()}")
        store.finish_run(run_id, result.status, result.counts(), result.error)
        return result
    dest = destination or build_destination(
        mapping.destination, config.destinations[mapping.destination], settings, runtime
    )

    def report(counts: dict[str, Any]) -> None:
        store.update_run(run_id, counts)
        if progress:
            progress(counts)

    try:
        result = MappingSync(
            store, mapping, dest, config.options[name], run_id=run_id, progress=report, clock=lambda: now
        ).run(full=full)
    except Exception as exc:
        store.finish_run(run_id, "failed", {}, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if destination is None:
            dest.close()
    store.finish_run(run_id, result.status, {**result.counts(), "full": full}, result.error)
    return result
