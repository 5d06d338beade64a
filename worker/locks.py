"""Locks that keep one sync per mapping at a time; a lost lock (dead worker) expires on its own."""

from __future__ import annotations

import threading
import uuid
from typing import Protocol

import redis

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


class Lock(Protocol):
    def acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...


class RedisLock:
    """``SET NX PX`` with a random token; renew and release only if we still own it."""

    def __init__(self, client: redis.Redis[bytes], key: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = uuid.uuid4().hex
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])


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
