"""One cycle's steps (pull, recompute, sync), each recording a run row. Celery tasks and the
in-process ``run`` command both call these; nothing here knows how it was scheduled."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from connectors.kernel.destination import Destination
from connectors.kernel.records import PROFILE_FIELDS, Consent
from connectors.kernel.runtime import Runtime
from worker.config import AppConfig
from worker.factory import build_destination
from worker.locks import LockLost
from worker.pull import PullResult, describe_error, pull, suppress, utc_now
from worker.segments import segment_masks, table_from_facts
from worker.segments.stats import segment_stats
from worker.settings import Settings
from worker.split import PartResult, run_part, settle_open_split
from worker.store import FenceLost, Store, utcnow
from worker.store.persist import persist
from worker.store.snapshot import snapshot_for
from worker.sync import MappingSync, Progress, Splitter, SyncResult

log = logging.getLogger(__name__)

__all__ = [
    "PullResult",
    "RecomputeResult",
    "profile_rows",
    "pull",
    "recompute",
    "suppress",
    "sync_mapping",
    "utc_now",
]


@dataclass
class RecomputeResult:
    sizes: dict[str, int]
    changes: dict[str, dict[str, int]]
    customers: int
    seconds: float
    run_id: int | None = None


def profile_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Who each customer key is, for destinations: identifiers and consent."""
    frame = table.reindex(columns=list(PROFILE_FIELDS))
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
        store.record_segment_history(run_id, now, changes, segment_stats(table, masks))
    except Exception as exc:
        _finish_quietly(store, run_id, "failed", {}, describe_error(exc))
        raise
    sizes = {name: c["size"] for name, c in changes.items()}
    seconds = time.monotonic() - started
    store.finish_run(run_id, "ok", {"customers": len(table), "segments": sizes, "seconds": round(seconds, 3)}, None)
    return RecomputeResult(sizes, changes, len(table), seconds, run_id)


def _finish_quietly(store: Store, run_id: int, status: str, counts: dict[str, Any], error: str | None) -> None:
    """Record an outcome when the database may be the thing that failed (then the next run closes it)."""
    try:
        store.finish_run(run_id, status, counts, error)
    except SQLAlchemyError as exc:
        log.error("could not record run %s as %s: %s", run_id, status, describe_error(exc))


_SUMMED = ("added", "removed", "rejected", "erased_removed")


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
    only_erasures: bool = False,
    deadline: float | None = None,
    resume_run: int | None = None,
    split: Splitter | None = None,
    dispatch: Dispatch | None = None,
) -> SyncResult:
    """Push one mapping's diff (or a full resync) and record the run.

    A sync owed in the store (a resync or full replace requested, an erasure's removals) is served
    here whoever asked for it; a full one makes this run full. ``deadline`` cuts the run into
    checkpointed parts: the result says ``more`` and a continuation resumes the same run row.

    With ``split``, a large diff is written as parts instead (worker/split.py) and ``dispatch`` sends
    them to the workers; while a split run still owes parts, a sync of the mapping sends those again
    (the store, not the queue, says what is owed) rather than planning anew. Without ``dispatch``
    the parts are sent here, one after another.
    """
    mapping = config.mapping(name)
    now = now or utc_now()
    open_run, pending = settle_open_split(store, name)
    if open_run is not None:
        if only_erasures:
            return SyncResult(
                name,
                status="deferred",
                run_id=open_run,
                error=f"split run {open_run} is still sending; the removals follow when it closes",
            )
        return _serve_parts(store, config, settings, runtime, name, open_run, pending, now, dispatch, destination)
    owed = store.sync_request(name)
    full = full or bool(owed and owed.full)
    previous = store.run(resume_run) if resume_run is not None else None
    if previous is not None and previous.status == "running":
        run_id, started_at = previous.id, previous.started_at
        full = full or bool(previous.counts.get("full"))
    else:
        previous = None
        store.mark_interrupted("sync", name)
        run_id, started_at = store.start_run("sync", name, task_id), utcnow()
    paused = store.paused_until(name, now)
    if paused is not None and not full:
        result = SyncResult(name, status="paused", error=f"paused by the destination until {paused.isoformat()}")
        store.finish_run(run_id, result.status, result.counts(), result.error)
        return result
    dest = destination or build_destination(
        mapping.destination, config.destinations[mapping.destination], settings, runtime
    )
    base = previous.counts if previous is not None else {}

    def totals(counts: dict[str, Any]) -> dict[str, Any]:
        return {**counts, **{k: int(base.get(k) or 0) + int(counts.get(k) or 0) for k in _SUMMED}, "full": full}

    def report(counts: dict[str, Any]) -> None:
        store.update_run(run_id, totals(counts))
        if progress:
            progress(counts)

    engine = MappingSync(
        store,
        mapping,
        dest,
        config.options[name],
        run_id=run_id,
        progress=report,
        clock=lambda: now,
        deadline=deadline,
        split=split,
    )
    try:
        result = engine.run(
            full=full, full_since=started_at if previous is not None else None, only_erasures=only_erasures
        )
    except Exception as exc:
        # lost the lock or the fence: another worker holds the mapping now; this run was cut short
        status = "interrupted" if isinstance(exc, LockLost | FenceLost) else "failed"
        _finish_quietly(store, run_id, status, {"full": full}, describe_error(exc))
        with contextlib.suppress(SQLAlchemyError):
            store.release_sync_request(name)
        raise
    finally:
        if destination is None:
            dest.close()
    result.run_id = run_id
    if result.more:
        store.update_run(run_id, totals(result.counts()))
        return result
    if result.parts:
        store.update_run(run_id, {**result.counts(), "full": full})
        return _serve_parts(
            store, config, settings, runtime, name, run_id, list(range(result.parts)), now, dispatch, destination
        )
    for key in _SUMMED:  # a continuation's row tells the whole run's story
        setattr(result, key, int(base.get(key) or 0) + getattr(result, key))
    store.finish_run(run_id, result.status, {**result.counts(), "full": full}, result.error)
    if result.status in ("ok", "partial") and not only_erasures:
        result.owed_again = store.settle_sync_request(name, started_at)
    elif not only_erasures:
        store.release_sync_request(name)
    if store.settle_erasures():
        store.flush_deleted()  # the last rows naming erased people are gone: from the disk too
    return result


Dispatch = Callable[[int, list[int]], None]


def sync_part(
    store: Store,
    config: AppConfig,
    settings: Settings,
    runtime: Runtime,
    name: str,
    run_id: int,
    number: int,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
    deadline: float | None = None,
    destination: Destination | None = None,
) -> PartResult:
    """Send one part of a split run (any worker; the run's fence keeps it from writing once superseded)."""
    part = store.part(run_id, number)
    if part is None or part.state != "pending":
        return PartResult(run_id, number, "skipped")
    mapping = config.mapping(name)
    now = now or utc_now()
    dest = destination or build_destination(
        mapping.destination, config.destinations[mapping.destination], settings, runtime
    )
    engine = MappingSync(
        store,
        mapping,
        dest,
        config.options[name],
        run_id=run_id,
        progress=progress,
        clock=lambda: now,
        deadline=deadline,
    )
    try:
        return run_part(engine, part)
    finally:
        if destination is None:
            dest.close()


def _serve_parts(
    store: Store,
    config: AppConfig,
    settings: Settings,
    runtime: Runtime,
    name: str,
    run_id: int,
    pending: list[int],
    now: datetime,
    dispatch: Dispatch | None,
    destination: Destination | None,
) -> SyncResult:
    """Hand a split run's pending parts to the workers, or send them here when there are none."""
    if dispatch is not None:
        dispatch(run_id, pending)
        counts = store.run(run_id).counts
        return SyncResult(name, status="running", run_id=run_id, parts=int(counts.get("parts") or len(pending)))
    for number in pending:
        sync_part(store, config, settings, runtime, name, run_id, number, now=now, destination=destination)
    row = store.run(run_id)
    counts = row.counts
    return SyncResult(
        name,
        status=row.status,
        segment_size=int(counts.get("segment_size") or 0),
        eligible=int(counts.get("eligible") or 0),
        added=int(counts.get("added") or 0),
        removed=int(counts.get("removed") or 0),
        rejected=int(counts.get("rejected") or 0),
        erased_removed=int(counts.get("erased_removed") or 0),
        error=row.error,
        run_id=run_id,
        parts=int(counts.get("parts") or 0),
    )
