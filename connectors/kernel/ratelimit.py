"""Rate and concurrency limits shared by every worker.

A token bucket per destination account lives in Redis so that all Celery workers draw from one
budget; the in-process run uses the local bucket. Mailchimp's cap is on simultaneous connections,
which is a concurrency limit (:class:`LocalConcurrency` / :class:`RedisConcurrency`), not a rate.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

import redis

Sleep = Callable[[float], None]
Clock = Callable[[], float]


class RateLimiter(Protocol):
    def acquire(self, cost: float = 1.0) -> None: ...


class ConcurrencyLimiter(Protocol):
    def slot(self) -> contextlib.AbstractContextManager[None]: ...


class Unlimited:
    def acquire(self, cost: float = 1.0) -> None:
        return None

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        yield


class LocalTokenBucket:
    """Thread-safe token bucket: ``rate`` tokens per second, at most ``capacity`` banked."""

    def __init__(
        self, rate: float, capacity: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def _take(self, cost: float) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= cost:
                self._tokens -= cost
                return 0.0
            return (cost - self._tokens) / self.rate

    def acquire(self, cost: float = 1.0) -> None:
        while (wait := self._take(min(cost, self.capacity))) > 0:
            self._sleep(wait)


_BUCKET_LUA = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', key, 'tokens', 'stamp')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - stamp) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', key, 'tokens', tokens, 'stamp', now)
redis.call('EXPIRE', key, math.ceil(capacity / rate) + 60)
return tostring(wait)
"""


class RedisTokenBucket:
    """The same bucket, kept in Redis (server time, one Lua script) so all workers share it."""

    def __init__(
        self, client: redis.Redis[bytes], key: str, rate: float, capacity: float, *, sleep: Sleep = time.sleep
    ) -> None:
        self.key = key
        self.rate = rate
        self.capacity = capacity
        self._sleep = sleep
        self._script = client.register_script(_BUCKET_LUA)

    def acquire(self, cost: float = 1.0) -> None:
        cost = min(cost, self.capacity)
        while True:
            wait = float(self._script(keys=[self.key], args=[self.rate, self.capacity, cost]))
            if wait <= 0:
                return
            self._sleep(wait)


class LocalConcurrency:
    def __init__(self, limit: int) -> None:
        self._sem = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._sem:
            yield


_SLOT_LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local token = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', key, 0, now - ttl)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, token)
  redis.call('EXPIRE', key, math.ceil(ttl) + 60)
  return 1
end
return 0
"""


class RedisConcurrency:
    """At most ``limit`` holders across all workers; a crashed holder's slot expires after ``ttl``.

    Check and take happen in one Lua script, so two workers can never both see a free slot.
    """

    def __init__(
        self, client: redis.Redis[bytes], key: str, limit: int, *, ttl: float = 180.0, sleep: Sleep = time.sleep
    ) -> None:
        self._client = client
        self.key = key
        self.limit = limit
        self.ttl = ttl
        self._sleep = sleep
        self._take = client.register_script(_SLOT_LUA)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        token = uuid.uuid4().hex
        while not self._take(keys=[self.key], args=[self.limit, self.ttl, token]):
            self._sleep(0.05)
        try:
            yield
        finally:
            self._client.zrem(self.key, token)
