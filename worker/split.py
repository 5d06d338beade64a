"""One large sync sent by several workers: the plan written as parts, each part a short task.

The planning run (under the mapping's lock) writes every part and its identities to the store in
one transaction and ends its task; part tasks, on any worker, send their part's batches through the
engine's own write-ahead path under the run's fence, and the one that settles the last part closes
the run. The store says what is owed: a part whose message is lost, or whose worker died, is still
``pending`` there, and the next sync of the mapping sends it again instead of planning anew.

A part taken again checks first what its earlier attempt already settled (acknowledged adds,
removes no longer held), so nothing is sent twice that was answered; a member whose profile changed
since the plan (another identity, no longer eligible, erased) is skipped and counted as ``changed``:
the next plan, which sees the change, handles them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from connectors.kernel.errors import ConfigError, ConnectorError, LongPauseError
from worker.diff import batches
from worker.store import FenceLost, Store
from worker.store.parts import PART_COUNTS, Part, WorkItem
from worker.sync import MappingSync, Plan, StoreMemory, SyncResult

log = logging.getLogger(__name__)

#: a part's final states besides ``done``; any of them makes the run's status say so
PART_FAILURES = ("failed", "needs_attention", "paused")


@dataclass
class PartSplitter:
    """Split a plan of more than ``over`` adds and removes into parts of about ``part_members``."""

    over: int
    part_members: int

    def wants(self, engine: MappingSync, plan: Plan) -> bool:
        moves = len(plan.diff.adds) + len(plan.diff.removes)
        return (
            self.over > 0
            and moves > self.over
            and engine.run_id is not None
            and engine.destination.parallel_parts
            and moves > engine.destination.batch_size
        )

    def write(self, engine: MappingSync, plan: Plan, result: SyncResult) -> None:
        size = engine.destination.batch_size
        per_part = max(size, self.part_members // size * size)  # whole batches per part
        parts: list[tuple[str, list[WorkItem]]] = [
            ("add", [WorkItem(i, plan.desired[i].key, None) for i in chunk])
            for chunk in batches(plan.diff.adds, per_part)
        ]
        parts += [
            ("remove", [WorkItem(i, plan.keys.get(i, ""), plan.erased.get(i)) for i in chunk])
            for chunk in batches(plan.diff.removes, per_part)
        ]
        engine.destination.memory = StoreMemory(engine.store, engine.mapping.name)
        engine.destination.prepare(engine.mapping.audience, engine.options)
        assert engine.run_id is not None
        engine.store.write_parts(engine.mapping.name, engine.run_id, parts)
        result.parts = len(parts)
        result.planned_at = plan.results
        log.info(
            "mapping %s: %d adds and %d removes written as %d parts of up to %d for the workers",
            engine.mapping.name,
            len(plan.diff.adds),
            len(plan.diff.removes),
            len(parts),
            per_part,
        )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class PartResult:
    run_id: int
    part: int
    #: done, failed, needs_attention, paused; ``skipped`` (not pending any more); ``more`` (time budget)
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    #: set when this part was the last: the run's final status
    closed: str | None = None
    #: a sync was asked for while the split run went on: the caller sends it
    owed_again: bool = False


def run_part(engine: MappingSync, part: Part) -> PartResult:
    """Send one part's batches; the engine is bound to the part's run (its fence and run id)."""
    store, name = engine.store, engine.mapping.name
    assert engine.run_id == part.run_id
    engine.destination.memory = StoreMemory(store, name)
    store.start_part(part.run_id, part.part, worker_name())
    # counted from what the store holds, not carried over: an attempt killed between a batch's
    # settling and its count loses nothing
    counts: Counter[str] = Counter()
    result = SyncResult(name)
    state, error = "done", None
    try:
        items = store.part_work(part.run_id, part.part)
        if part.op == "add":
            _send_adds(engine, part, items, counts, result)
        else:
            _send_removes(engine, part, items, counts, result)
    except LongPauseError as exc:
        resume = engine.clock() + timedelta(seconds=exc.wait_seconds or 60)
        store.pause(name, resume, exc.message)
        state, error = "paused", f"{exc.message}; resumes after {resume.isoformat()}"
    except ConfigError as exc:
        state, error = "needs_attention", exc.message
    except ConnectorError as exc:
        state, error = "failed", exc.message
    except FenceLost as exc:  # another run owns the mapping now: this part must not record
        log.warning("mapping %s: part %d of run %d stops: %s", name, part.part, part.run_id, exc)
        state, error = "failed", str(exc)
    store.count_part(part.run_id, part.part, counts)
    if result.more:
        return PartResult(part.run_id, part.part, "more", dict(counts))
    last = store.finish_part(part.run_id, part.part, state, error)
    outcome = PartResult(part.run_id, part.part, state, dict(counts), error)
    if last:
        outcome.closed, outcome.owed_again = close_split(store, part.run_id, name)
    else:
        update_progress(store, part.run_id)
    return outcome


def _answered(counts: Counter[str], result: SyncResult, before: tuple[int, int, int, int]) -> None:
    counts["added"] += result.added - before[0]
    counts["removed"] += result.removed - before[1]
    counts["rejected"] += result.rejected - before[2]
    counts["erased_removed"] += result.erased_removed - before[3]


def _progress(engine: MappingSync, part: Part, counts: Counter[str]) -> None:
    engine.store.count_part(part.run_id, part.part, counts)
    engine.progress({"part": part.part, **counts})


def _send_adds(
    engine: MappingSync, part: Part, items: list[WorkItem], counts: Counter[str], result: SyncResult
) -> None:
    store, name = engine.store, engine.mapping.name
    run = store.run(part.run_id)
    # a full resync re-sends members already held: only what this run itself settled counts as sent
    since = run.started_at if run.counts.get("full") else None
    held = set(store.acknowledged_among(name, [w.identity for w in items], since=since))
    refused = store.rejected_by_run(name, part.run_id)
    counts["added"] = len(held)  # settled by an earlier attempt of this part
    counts["rejected"] = sum(1 for w in items if w.identity in refused and w.identity not in held)
    todo = [w for w in items if w.identity not in held and w.identity not in refused]
    members = store.members([w.customer_key for w in todo])
    # no recompute since the plan: a member's identity and eligibility are as planned (only an
    # erasure, which deletes the profile, can have changed them)
    planned = run.counts.get("planned_at")
    as_planned = planned is not None and tuple(planned) == store.results_marker()
    send: dict[str, Any] = {}
    for w in todo:
        member = members.get(w.customer_key)
        if member is not None and as_planned:
            send[w.identity] = member
            continue
        identity = engine.classify(member)[0] if member is not None else None
        if identity != w.identity:
            counts["changed"] += 1  # gone, erased, no longer eligible, or another identity now
            continue
        send[w.identity] = member
    for batch in batches(sorted(send), engine.destination.batch_size):
        if engine.out_of_time(result):
            return
        before = (result.added, result.removed, result.rejected, result.erased_removed)
        engine.send_adds(result, {i: send[i] for i in batch}, {})
        _answered(counts, result, before)
        _progress(engine, part, counts)


def _send_removes(
    engine: MappingSync, part: Part, items: list[WorkItem], counts: Counter[str], result: SyncResult
) -> None:
    store, name = engine.store, engine.mapping.name
    held = set(store.acknowledged_among(name, [w.identity for w in items])) | set(store.inflight(name))
    todo = [w for w in items if w.identity in held]
    gone = [w for w in items if w.identity not in held]  # removed by an earlier attempt of this part
    counts["removed"] = len(gone)
    counts["erased_removed"] = sum(1 for w in gone if w.erasure_id is not None)
    erased = {w.identity: w.erasure_id for w in todo if w.erasure_id is not None}
    for batch in batches(todo, engine.destination.batch_size):
        if engine.out_of_time(result):
            return
        before = (result.added, result.removed, result.rejected, result.erased_removed)
        engine.send_removes(result, {w.identity: w.customer_key for w in batch}, erased)
        _answered(counts, result, before)
        _progress(engine, part, counts)


def split_totals(store: Store, run_id: int) -> tuple[dict[str, Any], list[Part]]:
    """The run's counts as planned, with every part's counts summed in and what is still owed."""
    parts = store.parts(run_id)
    planned = store.run(run_id).counts
    sums = Counter[str]()
    for p in parts:
        sums.update({k: p.counts.get(k, 0) for k in PART_COUNTS})
    owed = {op: sum(max(0, p.size - _answered_in(p)) for p in parts if p.op == op) for op in ("add", "remove")}
    counts = {
        **planned,
        **{k: int(v) for k, v in sums.items()},
        "pending_adds": owed["add"],
        "pending_removes": owed["remove"],
        "parts": len(parts),
        "parts_done": sum(1 for p in parts if p.state != "pending"),
    }
    return counts, parts


def _answered_in(part: Part) -> int:
    return sum(part.counts.get(k, 0) for k in ("added", "removed", "rejected", "changed"))


def update_progress(store: Store, run_id: int) -> None:
    counts, _ = split_totals(store, run_id)
    store.update_run(run_id, counts)


def close_split(store: Store, run_id: int, mapping: str) -> tuple[str | None, bool]:
    """Close a split run whose parts all settled; (its status, a sync owed again). Exactly one
    caller closes it; the others get (None, False)."""
    counts, parts = split_totals(store, run_id)
    if any(p.state == "pending" for p in parts):
        return None, False
    failed = [p for p in parts if p.state in PART_FAILURES]
    if failed:
        states = {p.state for p in failed}
        status: str = next(s for s in ("needs_attention", "paused", "failed") if s in states)
        first = failed[0]
        error: str | None = f"{len(failed)} of {len(parts)} parts did not finish; part {first.part}: {first.error}"
    else:
        status, error = ("partial" if counts.get("rejected") else "ok"), None
    if not store.close_split_run(run_id, status, counts, error):
        return None, False
    started_at = store.run(run_id).started_at
    owed_again = False
    if status in ("ok", "partial"):
        owed_again = store.settle_sync_request(mapping, started_at)
    else:
        store.release_sync_request(mapping)
    if store.settle_erasures():
        store.flush_deleted()
    log.info("mapping %s: split run %d closed %s after %d parts", mapping, run_id, status, len(parts))
    return status, owed_again


def settle_open_split(store: Store, mapping: str) -> tuple[int | None, list[int]]:
    """The split run of ``mapping`` still owed parts and their numbers (None: none is open). A split
    run whose parts all settled but that was never closed (killed in between) is closed here."""
    for unclosed in store.unclosed_splits(mapping):
        close_split(store, unclosed, mapping)
    run_id = store.open_split(mapping)
    if run_id is None:
        return None, []
    return run_id, [p.part for p in store.parts(run_id) if p.state == "pending"]
