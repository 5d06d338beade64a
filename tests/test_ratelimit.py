"""Limits shared by every worker through Redis: one token bucket per account, one connection cap."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from connectors.kernel.ratelimit import LocalTokenBucket, RedisConcurrency, RedisTokenBucket

pytestmark = pytest.mark.redis


def test_two_workers_draw_from_one_redis_bucket(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    waits: list[float] = []
    first = RedisTokenBucket(client, f"{key_prefix}:rate:acct", rate=1.0, capacity=5, sleep=waits.append)
    second = RedisTokenBucket(client, f"{key_prefix}:rate:acct", rate=1.0, capacity=5, sleep=waits.append)
    for _ in range(3):
        first.acquire()
    for _ in range(2):
        second.acquire()
    assert waits == []  # five tokens in the bucket, shared
    sleeps: list[float] = []

    def stop_after_one(seconds: float) -> None:
        sleeps.append(seconds)
        raise TimeoutError

    second._sleep = stop_after_one
    with pytest.raises(TimeoutError):
        second.acquire()
    assert 0.5 < sleeps[0] <= 1.0  # the sixth request waits for a refill, whichever worker asks


def test_the_connection_cap_holds_across_holders(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    limit = RedisConcurrency(client, f"{key_prefix}:slots:mc", limit=2, sleep=lambda _: time.sleep(0.01))
    peak = 0
    inside = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal peak, inside
        with limit.slot():
            with guard:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.05)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2


def test_the_local_bucket_waits_on_its_injected_clock() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = LocalTokenBucket(rate=2.0, capacity=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        bucket.acquire()
    assert now[0] == pytest.approx(2.0)  # 2 free, then 4 more at 2 per second
