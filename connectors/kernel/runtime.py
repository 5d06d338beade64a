"""What the worker hands a connector: limiter factories, injectable sleep, defaults from settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from connectors.kernel.credentials import CredentialStore
from connectors.kernel.ratelimit import (
    ConcurrencyLimiter,
    LocalConcurrency,
    LocalTokenBucket,
    RateLimiter,
    RedisConcurrency,
    RedisTokenBucket,
)
from connectors.kernel.retry import RetryPolicy


@dataclass
class Runtime:
    redis: redis.Redis[bytes] | None = None
    sleep: Callable[[float], None] = time.sleep
    #: monotonic clock for local buckets; tests pair a fake clock with a fake sleep
    clock: Callable[[], float] = time.monotonic
    key_prefix: str = "audience-sync"
    default_phone_region: str = "US"
    retry_attempts: int = 6
    retry_max_seconds: float = 300.0
    max_inline_pause: float = 120.0
    extra: dict[str, object] = field(default_factory=dict)
    #: wall clock (token expiry); tests move it without waiting
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: where rotating OAuth tokens are kept (the worker's store); None: no rotating tokens here
    credentials: CredentialStore | None = None
    #: limiters are shared by every connector built from this runtime (one run, one process)
    _buckets: dict[str, LocalTokenBucket] = field(default_factory=dict, repr=False)
    _slots: dict[str, LocalConcurrency] = field(default_factory=dict, repr=False)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.retry_attempts,
            max_total_seconds=self.retry_max_seconds,
            max_inline_pause=self.max_inline_pause,
            sleep=self.sleep,
        )

    def rate_limiter(self, key: str, rate: float, capacity: float) -> RateLimiter:
        """A bucket shared through Redis when the worker has one, else per process."""
        full_key = f"{self.key_prefix}:rate:{key}"
        if self.redis is not None:
            return RedisTokenBucket(self.redis, full_key, rate, capacity, sleep=self.sleep)
        if full_key not in self._buckets:
            self._buckets[full_key] = LocalTokenBucket(rate, capacity, clock=self.clock, sleep=self.sleep)
        return self._buckets[full_key]

    def concurrency(self, key: str, limit: int) -> ConcurrencyLimiter:
        full_key = f"{self.key_prefix}:slots:{key}"
        if self.redis is not None:
            return RedisConcurrency(self.redis, full_key, limit, sleep=self.sleep)
        if full_key not in self._slots:
            self._slots[full_key] = LocalConcurrency(limit)
        return self._slots[full_key]
