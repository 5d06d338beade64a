"""Asking the workers for a sync: owed in the store first, coalesced, then enqueued.

The request is written to the store before anything is sent, so a broker that is down (or a message
lost in a Redis restart) loses nothing: the next cycle serves every owed sync. A request for a mapping
that already has one owed returns that one's task (a full request upgrades it). The caller learns
whether a worker is alive to take it: workers keep a heartbeat key in Redis.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from worker.settings import Settings
from worker.store import Store, utcnow

Send = Callable[[str, bool], str]
HEARTBEAT_SECONDS = 10.0
HEARTBEAT_TTL = 30


class BrokerUnavailable(RuntimeError):
    """Redis (the broker) did not answer; the request stays owed in the store."""


@dataclass(frozen=True)
class Queued:
    mapping: str
    full: bool
    task_id: str | None
    #: an owed request already existed: this one was folded into it
    coalesced: bool
    #: workers seen alive in the last HEARTBEAT_TTL seconds (None: not checked)
    workers: int | None = None

    def describe(self, queue: str) -> str:
        what = "full replace" if self.full else "resync"
        if self.coalesced:
            text = f"a {what} of {self.mapping} was already owed (task {self.task_id}); not queued twice"
        else:
            text = f"queued {what} of {self.mapping} (task {self.task_id})"
        if self.workers == 0:
            text += (
                f"; but no worker is consuming queue {queue!r} (none seen in the last {HEARTBEAT_TTL} s): start one"
                " with `celery -A worker.celery_app worker`, or run it here with `--inline`"
            )
        return text


def worker_key(prefix: str, hostname: str) -> str:
    return f"{prefix}:workers:{hostname}"


def live_workers(client: redis.Redis[bytes], prefix: str) -> int:
    return sum(1 for _ in client.scan_iter(match=worker_key(prefix, "*"), count=100))


def celery_send(mapping: str, full: bool) -> str:
    from worker.tasks import sync_mapping_task

    # no publish retries: a broker that is down is reported now, not after a long wait
    return str(sync_mapping_task.apply_async(args=[mapping], kwargs={"full": full}, retry=False).id)


def request_sync(
    store: Store,
    settings: Settings,
    mapping: str,
    *,
    full: bool,
    reason: str,
    send: Send = celery_send,
    client: redis.Redis[bytes] | None = None,
) -> Queued:
    """Record the owed sync, then enqueue it unless one is already on its way."""
    owed, existed = store.request_sync(mapping, full=full, reason=reason)
    fresh = owed.sent_at is not None and (utcnow() - owed.sent_at).total_seconds() < settings.visibility_timeout_seconds
    if existed and owed.task_id and fresh:
        return Queued(mapping, owed.full, owed.task_id, coalesced=True, workers=_workers(settings, client))
    try:
        task_id = send(mapping, owed.full)
    except Exception as exc:
        if _is_broker_error(exc):
            raise BrokerUnavailable(
                f"the broker (Redis) did not answer ({type(exc).__name__}); the {reason} of {mapping} is recorded"
                " and runs at the next cycle"
            ) from None
        raise
    store.set_request_task(mapping, task_id)
    return Queued(mapping, owed.full, task_id, coalesced=False, workers=_workers(settings, client))


def _workers(settings: Settings, client: redis.Redis[bytes] | None) -> int | None:
    try:
        client = client or redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        return live_workers(client, settings.key_prefix)
    except redis.RedisError:
        return None


def _is_broker_error(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError

    return isinstance(exc, OperationalError | redis.RedisError | ConnectionError | OSError)


class Heartbeat:
    """A worker's sign of life: a key with a short TTL, refreshed from a thread while it runs."""

    def __init__(self, client: redis.Redis[bytes], prefix: str, queue: str, hostname: str | None = None) -> None:
        self.client, self.key, self.queue = client, worker_key(prefix, hostname or socket.gethostname()), queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audience-sync heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            # Redis may be away: the worker itself reconnects, and the next beat tries again
            with contextlib.suppress(redis.RedisError):
                self.client.set(self.key, self.queue, ex=HEARTBEAT_TTL)
            if self._stop.wait(HEARTBEAT_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)
