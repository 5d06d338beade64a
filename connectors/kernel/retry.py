"""Retry policy built from named tenacity parts.

Only :class:`RetryableError` (and its rate-limited subclass) is retried. The wait is exponential with
full jitter, but never shorter than the API's own hint (Retry-After, Shopify's bucket refill time).
Attempts and total waiting are bounded: unbounded retries amplify an outage.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.stop import stop_base

from connectors.kernel.errors import LongPauseError, RateLimitedError, RetryableError

T = TypeVar("T")
Sleep = Callable[[float], None]


@dataclass
class RetryStats:
    """What retrying cost, for the run summary."""

    retries: int = 0
    waited_seconds: float = 0.0
    throttled: int = 0


class stop_when_idle_for(stop_base):  # named like tenacity's own stop conditions
    """Stop once the planned sleeps add up to ``seconds`` (injected sleeps count too)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.idle_for >= self.seconds


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    max_total_seconds: float = 300.0
    initial_wait: float = 0.5
    max_wait: float = 60.0
    #: a hint above this stops the operation (LongPauseError) instead of sleeping in the task
    max_inline_pause: float = 120.0
    sleep: Sleep = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def wait_for(self, state: RetryCallState) -> float:
        attempt = state.attempt_number
        backoff = min(self.max_wait, self.initial_wait * (2 ** (attempt - 1)))
        wait = self.rng.uniform(backoff / 2, backoff)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.wait_seconds is not None:
            wait = max(wait, exc.wait_seconds)
        return wait

    def call(self, fn: Callable[[], T], stats: RetryStats | None = None) -> T:
        """Run ``fn`` under the policy; the last error is re-raised when attempts run out."""

        def before_sleep(state: RetryCallState) -> None:
            if stats is None:
                return
            stats.retries += 1
            stats.waited_seconds += state.upcoming_sleep
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RateLimitedError):
                stats.throttled += 1

        def check_pause(state: RetryCallState) -> float:
            wait = self.wait_for(state)
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RateLimitedError) and wait > self.max_inline_pause:
                raise LongPauseError(exc.message, wait_seconds=wait, status=exc.status, code=exc.code)
            return wait

        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            # idle_for sums the planned sleeps, so the bound holds even when sleep is injected
            stop=stop_after_attempt(self.max_attempts)
            | stop_after_delay(self.max_total_seconds)
            | stop_when_idle_for(self.max_total_seconds),
            wait=check_pause,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)
