"""Celery tasks: thin, idempotent, taking names not objects. All run with ``acks_late``.

A redelivered task (worker killed) simply runs again: pull upserts by id, recompute is a pure
function of the store, and sync pushes the diff against what the destination acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task

from connectors.redact import install_log_redaction
from worker.celery_app import app
from worker.context import context
from worker.cycle import PullResult, pull, recompute, sync_mapping, utc_now
from worker.locks import RedisLock

log = logging.getLogger(__name__)
install_log_redaction()


def _renew(lock: RedisLock) -> None:
    if not lock.renew():
        log.warning("lock %s was lost (expired while working); another worker may start", lock.key)


def _too_many_deliveries(task: Task, kind: str, mapping: str | None) -> bool:
    """Poison-task guard: a task that kills its worker every time is given up after a few tries."""
    ctx = context()
    task_id = task.request.id or "eager"
    # per attempt: a retry (lock busy) is a new attempt, a redelivery of the same attempt is not
    key = f"{ctx.settings.key_prefix}:deliveries:{task_id}:{task.request.retries}"
    count = int(ctx.redis.incr(key))
    ctx.redis.expire(key, 86400)
    if count > ctx.settings.max_deliveries:
        run_id = ctx.store.start_run(kind, mapping, task_id)
        ctx.store.finish_run(run_id, "failed", {}, f"given up after {count - 1} deliveries (worker lost each time)")
        return True
    return False


def _under_cycle_lock(task: Task, kind: str, work: Callable[[RedisLock], dict[str, Any]]) -> dict[str, Any]:
    """Pull and recompute share one lock: they must not interleave with each other or a cycle."""
    ctx = context()
    if _too_many_deliveries(task, kind, None):
        return {"status": "given_up"}
    lock = RedisLock(ctx.redis, f"{ctx.settings.key_prefix}:lock:cycle", ctx.settings.lock_ttl_seconds)
    if not lock.acquire():
        log.info("a %s is already running elsewhere; skipping this one", kind)
        return {"status": "skipped"}
    try:
        return work(lock)
    finally:
        lock.release()


def _pull(task: Task, lock: RedisLock, reread_hours: float) -> PullResult:
    ctx = context()
    return pull(
        ctx.store,
        ctx.config,
        ctx.settings,
        ctx.runtime,
        task_id=task.request.id,
        reread_hours=reread_hours,
        progress=lambda _: _renew(lock),
    )


@app.task(name="audience_sync.pull", bind=True, acks_late=True)
def pull_task(self: Task, reread_hours: float = 0.0) -> dict[str, Any]:
    """Incremental pull from the store API (upserts by id: safe to run twice)."""

    def work(lock: RedisLock) -> dict[str, Any]:
        result = _pull(self, lock, reread_hours)
        return {"status": result.status, **result.counts()}

    return _under_cycle_lock(self, "pull", work)


@app.task(name="audience_sync.recompute", bind=True, acks_late=True)
def recompute_task(self: Task) -> dict[str, Any]:
    """Recompute every segment from the store (a pure function of the data and the clock)."""
    ctx = context()

    def work(lock: RedisLock) -> dict[str, Any]:
        result = recompute(ctx.store, ctx.config, utc_now(), task_id=self.request.id)
        return {"status": "ok", "segments": result.sizes}

    return _under_cycle_lock(self, "recompute", work)


@app.task(name="audience_sync.cycle", bind=True, acks_late=True)
def cycle_task(self: Task, reread_hours: float = 0.0) -> dict[str, Any]:
    """Pull, recompute, then fan out one sync task per mapping (the beat schedule runs this)."""
    ctx = context()

    def work(lock: RedisLock) -> dict[str, Any]:
        pulled = _pull(self, lock, reread_hours)
        lock.renew()
        recomputed = recompute(ctx.store, ctx.config, utc_now(), task_id=self.request.id)
        return {"pull": pulled.status, "segments": recomputed.sizes}

    outcome = _under_cycle_lock(self, "cycle", work)
    if outcome.get("status") in ("given_up", "skipped"):
        return outcome
    for name in ctx.config.mappings:
        sync_mapping_task.delay(name)
    return {**outcome, "mappings": list(ctx.config.mappings)}


@app.task(name="audience_sync.sync_mapping", bind=True, acks_late=True, max_retries=20)
def sync_mapping_task(self: Task, mapping: str, full: bool = False) -> dict[str, Any]:
    """Sync one mapping under its lock; if another sync holds it, try again shortly."""
    ctx = context()
    if _too_many_deliveries(self, "sync", mapping):
        return {"status": "given_up"}
    lock = RedisLock(ctx.redis, f"{ctx.settings.key_prefix}:lock:sync:{mapping}", ctx.settings.lock_ttl_seconds)
    if not lock.acquire():
        # never a countdown longer than the visibility timeout: that would deliver the task twice
        countdown = min(30, max(1, ctx.settings.visibility_timeout_seconds // 4))
        raise self.retry(countdown=countdown)
    try:
        result = sync_mapping(
            ctx.store,
            ctx.config,
            ctx.settings,
            ctx.runtime,
            mapping,
            full=full,
            task_id=self.request.id,
            progress=lambda _: _renew(lock),
        )
    finally:
        lock.release()
    return {
        "status": result.status,
        "added": result.added,
        "removed": result.removed,
        "rejected": result.rejected,
    }
