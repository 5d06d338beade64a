"""Celery tasks: thin, idempotent, taking names not objects. All run with ``acks_late``.

A redelivered task (worker killed) simply runs again: pull upserts by id, recompute is a pure
function of the store, and sync pushes the diff against what the destination may hold. Every task
works under a lock kept alive by a heartbeat and stops at a time budget well inside the broker's
visibility timeout, re-enqueueing a continuation: a worker's death is noticed within minutes. A
fault of Redis itself (restart, connection loss) is a retryable fault of the task; and whatever
happens to a message, the store still says what is owed, and the next cycle serves it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Task

from connectors.kernel.redact import install_log_redaction
from worker.celery_app import app
from worker.context import context
from worker.cycle import pull, recompute, sync_mapping, sync_part, utc_now
from worker.inbox import process_inbox, webhook_cycle
from worker.locks import LockLost, RedisLock
from worker.queue import request_sync
from worker.split import PartSplitter, close_split

log = logging.getLogger(__name__)
install_log_redaction()

REDIS_FAULTS = (redis.ConnectionError, redis.TimeoutError)


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


def _wait_for_lock(task: Task, kind: str, mapping: str | None, lock: RedisLock) -> None:
    """The lock is held by a live worker: come back shortly, and say so visibly after waiting long."""
    ctx = context()
    settings = ctx.settings
    # never a countdown longer than the visibility timeout: that would deliver the task twice
    countdown = min(15, max(1, settings.visibility_timeout_seconds // 10))
    tries = max(1, int(settings.lock_wait_seconds // countdown))
    if task.request.retries >= tries:
        holder = lock.holder() or {}
        run_id = ctx.store.start_run(kind, mapping, task.request.id)
        if mapping is not None:
            ctx.store.release_sync_request(mapping)
        ctx.store.finish_run(
            run_id,
            "deferred",
            {"waited_seconds": tries * countdown},
            f"waited {tries * countdown} s for the {kind} already running (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}); what was asked stays owed in the store and the next cycle runs it",
        )
        return
    raise task.retry(countdown=countdown)


def _budget() -> float:
    return time.monotonic() + context().settings.task_budget_seconds


def _under_lock(task: Task, kind: str, name: str, mapping: str | None, work: Callable[[RedisLock], Any]) -> Any:
    ctx = context()
    lock = RedisLock(ctx.redis, f"{ctx.settings.key_prefix}:lock:{name}", ctx.settings.lock_ttl_seconds)
    if not lock.acquire():
        _wait_for_lock(task, kind, mapping, lock)
        return {"status": "deferred"}
    try:
        with lock.heartbeat():
            return work(lock)
    except LockLost as exc:
        log.warning("%s stopped: %s; retrying", kind, exc)
        raise task.retry(countdown=5) from None
    except REDIS_FAULTS as exc:
        log.warning("%s: lost the connection to Redis (%s); retrying the task", kind, type(exc).__name__)
        raise task.retry(countdown=5, exc=exc) from None
    finally:
        with contextlib.suppress(redis.RedisError):
            lock.release()


@app.task(name="audience_sync.pull", bind=True, acks_late=True, max_retries=None)
def pull_task(self: Task, reread_hours: float = 0.0) -> dict[str, Any]:
    """Incremental pull from the store API (upserts by id: safe to run twice)."""
    ctx = context()
    if _too_many_deliveries(self, "pull", None):
        return {"status": "given_up"}

    def work(lock: RedisLock) -> dict[str, Any]:
        result = pull(
            ctx.store,
            ctx.config,
            ctx.settings,
            ctx.runtime,
            task_id=self.request.id,
            reread_hours=reread_hours,
            progress=lambda _: lock.check(),
            deadline=_budget(),
        )
        if result.more:
            pull_task.apply_async(kwargs={"reread_hours": 0.0})
        return {"status": result.status, **result.counts()}

    result: dict[str, Any] = _under_lock(self, "pull", "cycle", None, work)
    return result


@app.task(name="audience_sync.recompute", bind=True, acks_late=True, max_retries=None)
def recompute_task(self: Task) -> dict[str, Any]:
    """Recompute every segment from the store (a pure function of the data and the clock)."""
    ctx = context()
    if _too_many_deliveries(self, "recompute", None):
        return {"status": "given_up"}

    def work(lock: RedisLock) -> dict[str, Any]:
        result = recompute(ctx.store, ctx.config, utc_now(), task_id=self.request.id)
        return {"status": "ok", "segments": result.sizes}

    result: dict[str, Any] = _under_lock(self, "recompute", "cycle", None, work)
    return result


@app.task(name="audience_sync.cycle", bind=True, acks_late=True, max_retries=None)
def cycle_task(self: Task, reread_hours: float = 0.0) -> dict[str, Any]:
    """Pull, recompute, then ask for one sync per mapping (the beat schedule runs this).

    A pull that reaches the time budget re-enqueues the cycle, which goes on from the watermark.
    """
    ctx = context()
    if _too_many_deliveries(self, "cycle", None):
        return {"status": "given_up"}

    def work(lock: RedisLock) -> dict[str, Any]:
        pulled = pull(
            ctx.store,
            ctx.config,
            ctx.settings,
            ctx.runtime,
            task_id=self.request.id,
            reread_hours=reread_hours,
            progress=lambda _: lock.check(),
            deadline=_budget(),
        )
        if pulled.more:
            cycle_task.apply_async()
            return {"pull": pulled.status, "more": True}
        lock.check()
        # store webhooks received while no worker ran (or whose own cycle was lost): the safety net
        process_inbox(ctx.store, ctx.settings, task_id=self.request.id, deadline=_budget())
        recomputed = recompute(ctx.store, ctx.config, utc_now(), task_id=self.request.id)
        return {"pull": pulled.status, "segments": recomputed.sizes}

    outcome: dict[str, Any] = _under_lock(self, "cycle", "cycle", None, work)
    if outcome.get("status") in ("given_up", "deferred") or outcome.get("more"):
        return outcome
    for name in ctx.config.mappings:
        request_sync(ctx.store, ctx.settings, name, full=False, reason="cycle", client=ctx.redis)
    return {**outcome, "mappings": list(ctx.config.mappings)}


@app.task(name="audience_sync.sync_mapping", bind=True, acks_late=True, max_retries=None)
def sync_mapping_task(self: Task, mapping: str, full: bool = False, resume_run: int | None = None) -> dict[str, Any]:
    """Sync one mapping under its lock; if another sync holds it, try again shortly."""
    ctx = context()
    if mapping not in ctx.config.mappings:
        log.warning("no mapping named %r in the config any more; nothing to sync", mapping)
        return {"status": "unknown_mapping"}
    if _too_many_deliveries(self, "sync", mapping):
        return {"status": "given_up"}

    def work(lock: RedisLock) -> dict[str, Any]:
        result = sync_mapping(
            ctx.store,
            ctx.config,
            ctx.settings,
            ctx.runtime,
            mapping,
            full=full,
            task_id=self.request.id,
            progress=lambda _: lock.check(),
            deadline=_budget(),
            resume_run=resume_run,
            split=PartSplitter(ctx.settings.split_sync_over, ctx.settings.sync_part_members),
            dispatch=lambda run_id, parts: _send_parts(mapping, run_id, parts),
        )
        if result.more:
            # checkpointed: the continuation resumes the same run row from what is acknowledged
            sync_mapping_task.apply_async(args=[mapping], kwargs={"full": full, "resume_run": result.run_id})
        elif result.owed_again:
            owed = ctx.store.sync_request(mapping)
            sync_mapping_task.apply_async(args=[mapping], kwargs={"full": bool(owed and owed.full)})
        return {
            "status": result.status,
            "added": result.added,
            "removed": result.removed,
            "rejected": result.rejected,
            "more": result.more,
            **({"parts": result.parts} if result.parts else {}),
        }

    result: dict[str, Any] = _under_lock(self, "sync", f"sync:{mapping}", mapping, work)
    return result


def _send_parts(mapping: str, run_id: int, parts: list[int]) -> None:
    for number in parts:
        sync_part_task.apply_async(args=[mapping, run_id, number])


@app.task(name="audience_sync.sync_part", bind=True, acks_late=True, max_retries=None)
def sync_part_task(self: Task, mapping: str, run_id: int, part: int) -> dict[str, Any]:
    """Send one part of a split sync; many run at once, on any worker. Not under the mapping's lock
    (that is the point) but under the part's own: a second delivery of a part being sent ends at
    once, and the first's worker dying frees it within the lock's TTL."""
    ctx = context()
    if mapping not in ctx.config.mappings:
        log.warning("no mapping named %r in the config any more; part %d of run %d dropped", mapping, part, run_id)
        return {"status": "unknown_mapping"}
    key = f"{ctx.settings.key_prefix}:deliveries:{self.request.id or 'eager'}:{self.request.retries}"
    if int(ctx.redis.incr(key)) > ctx.settings.max_deliveries:
        if ctx.store.finish_part(run_id, part, "failed", "given up: the worker was lost at every delivery"):
            _after_split(mapping, *close_split(ctx.store, run_id, mapping))
        return {"status": "given_up"}
    ctx.redis.expire(key, 86400)
    lock = RedisLock(ctx.redis, f"{ctx.settings.key_prefix}:lock:part:{run_id}:{part}", ctx.settings.lock_ttl_seconds)
    try:
        if not lock.acquire():
            return {"status": "busy"}  # being sent by another worker
        with lock.heartbeat():
            outcome = sync_part(
                ctx.store,
                ctx.config,
                ctx.settings,
                ctx.runtime,
                mapping,
                run_id,
                part,
                progress=lambda _: lock.check(),
                deadline=_budget(),
            )
    except LockLost as exc:
        log.warning("part %d of run %d stopped: %s; retrying", part, run_id, exc)
        raise self.retry(countdown=5) from None
    except REDIS_FAULTS as exc:
        log.warning("part %d of run %d: lost Redis (%s); retrying", part, run_id, type(exc).__name__)
        raise self.retry(countdown=5, exc=exc) from None
    finally:
        with contextlib.suppress(redis.RedisError):
            lock.release()
    if outcome.status == "more":
        sync_part_task.apply_async(args=[mapping, run_id, part])
    _after_split(mapping, outcome.closed, outcome.owed_again)
    return {"status": outcome.status, "closed": outcome.closed, **outcome.counts}


def _after_split(mapping: str, closed: str | None, owed_again: bool) -> None:
    """The last part closed the run: a sync asked for meanwhile is sent now."""
    if closed is None:
        return
    ctx = context()
    if owed_again:
        owed = ctx.store.sync_request(mapping)
        sync_mapping_task.apply_async(args=[mapping], kwargs={"full": bool(owed and owed.full)})


@app.task(name="audience_sync.webhook_cycle", bind=True, acks_late=True, max_retries=None)
def webhook_cycle_task(self: Task) -> dict[str, Any]:
    """The small cycle store webhooks ask for (debounced by the API): drain the inbox, recompute, and
    ask for a sync of each mapping whose membership changed (owed in the store, coalesced)."""
    ctx = context()
    if _too_many_deliveries(self, "webhook", None):
        return {"status": "given_up"}
    from worker.store_webhooks import debounce_key

    # webhooks from now on ask for the next cycle: this one may already have started reading
    with contextlib.suppress(redis.RedisError):
        ctx.redis.delete(debounce_key(ctx.settings))

    def work(lock: RedisLock) -> dict[str, Any]:
        done = webhook_cycle(
            ctx.store,
            ctx.config,
            ctx.settings,
            ctx.runtime,
            lambda name: request_sync(ctx.store, ctx.settings, name, full=False, reason="webhook", client=ctx.redis),
            task_id=self.request.id,
        )
        return {"status": done.inbox.status, "webhooks": done.inbox.deliveries, "synced": done.synced}

    result: dict[str, Any] = _under_lock(self, "webhook", "cycle", None, work)
    return result
