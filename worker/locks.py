"""Locks that keep one sync per mapping (and one cycle) at a time.

A lock names its holder (host and process) and is kept alive by a heartbeat thread for as long as
the holder works, however long it waits on a throttled API; a dead holder stops renewing, so its
lock expires within one TTL. On the holder's own host a lock whose process is gone is not held:
the next taker takes it over at once (a pool child killed by the OOM killer comes back as a
redelivered task 0.2 s later and must not be turned away by its own dead predecessor).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import redis

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""


class LockLost(RuntimeError):
    """The lock expired or was taken while we worked: stop before recording anything more."""


class Lock(Protocol):
    def acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RedisLock:
    """``SET NX PX`` with a value naming the holder; renew and release only if we still own it."""

    def __init__(self, client: redis.Redis[bytes], key: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1000, int(ttl_seconds * 1000))
        self.value = json.dumps(
            {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}
        )
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._take_over = client.register_script(_TAKE_OVER)
        self.lost = threading.Event()
        self.taken_over_from: dict[str, object] | None = None

    def holder(self) -> dict[str, object] | None:
        raw = self.client.get(self.key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return {"raw": raw.decode(errors="replace")}
        return value if isinstance(value, dict) else None

    def acquire(self) -> bool:
        if self.client.set(self.key, self.value, nx=True, px=self.ttl_ms):
            return True
        raw = self.client.get(self.key)
        holder = self.holder()
        if raw is None or holder is None:
            return bool(self.client.set(self.key, self.value, nx=True, px=self.ttl_ms))
        pid = holder.get("pid")
        dead = holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)
        if dead and self._take_over(keys=[self.key], args=[raw, self.value, self.ttl_ms]):
            log.warning("took over %s from a dead holder (pid %s)", self.key, pid)
            self.taken_over_from = holder
            return True
        return False

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.value, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.value])

    def check(self) -> None:
        """Raise :class:`LockLost` if the heartbeat found the lock gone (called between batches)."""
        if self.lost.is_set():
            raise LockLost(f"lost the lock {self.key} while working; another worker may have taken over")

    @contextmanager
    def heartbeat(self, every: float | None = None) -> Iterator[RedisLock]:
        """Renew the lock every third of its TTL until the block ends, from a thread of its own."""
        interval = every if every is not None else self.ttl_ms / 3000
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    if not self.renew():
                        self.lost.set()
                        return
                except redis.RedisError:
                    # Redis itself is away: the lock may be gone with it; the holder stops at its next check
                    self.lost.set()
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat {self.key}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(5)


_LOCAL: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


class LocalLock:
    """The in-process equivalent for the embedded ``run`` (no Redis)."""

    def __init__(self, key: str) -> None:
        with _LOCAL_GUARD:
            self._lock = _LOCAL.setdefault(key, threading.Lock())

    def acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        if self._lock.locked():
            self._lock.release()
