"""What the worker hands a connector: limiter factories, injectable sleep, defaults from settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from connectors.ratelimit import (
    ConcurrencyLimiter,
    LocalConcurrency,
    LocalTokenBucket,
    RateLimiter,
    RedisConcurrency,
    RedisTokenBucket,
)
from connectors.retry import RetryPolicy

_LOCAL_BUCKETS: dict[str, LocalTokenBucket] = {}
_LOCAL_SLOTS: dict[str, LocalConcurrency] = {}


@dataclass
class Runtime:
    redis: redis.Redis[bytes] | None = None
    sleep: Callable[[float], None] = time.sleep
    key_prefix: str = "audience-sync"
    default_phone_region: str = "US"
    retry_attempts: int = 6
    retry_max_seconds: float = 300.0
    max_inline_pause: float = 120.0
    extra: dict[str, object] = field(default_factory=dict)

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
        return _LOCAL_BUCKETS.setdefault(full_key, LocalTokenBucket(rate, capacity, sleep=self.sleep))

    def concurrency(self, key: str, limit: int) -> ConcurrencyLimiter:
        full_key = f"{self.key_prefix}:slots:{key}"
        if self.redis is not None:
            return RedisConcurrency(self.redis, full_key, limit)
        return _LOCAL_SLOTS.setdefault(full_key, LocalConcurrency(limit))
