"""Faults of the worker tier with real Celery workers and real Redis: a killed pool child, a Redis
restart, two workers and a throttled destination, a resync stuck behind a busy lock, a sync longer
than a task may run. Each ends with the destination exactly right and the run rows saying why."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from connectors.file.destination import audience_path, read_audience
from connectors.kernel.emulator import Faults
from connectors.kernel.identifiers import sha256_hex
from connectors.meta.destination import encode_identity
from connectors.meta.emulator import MetaEmulator
from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
from connectors.shopify.synthetic import SyntheticStore
from tests.helpers import seed_segment, write_config
from tests.services import ThrowawayRedis
from tests.worker_process import CeleryWorker, wait_for
from worker.celery_app import make_celery
from worker.locks import RedisLock
from worker.queue import request_sync
from worker.settings import Settings
from worker.store import open_store

pytestmark = pytest.mark.redis


def _env(redis_url: str, key_prefix: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "AUDIENCE_SYNC_REDIS_URL": redis_url,
        "AUDIENCE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "AUDIENCE_SYNC_KEY_PREFIX": key_prefix,
        "AUDIENCE_SYNC_QUEUE": f"{key_prefix}-q",
        "AUDIENCE_SYNC_VISIBILITY_TIMEOUT_SECONDS": "12",
        "AUDIENCE_SYNC_LOCK_TTL_SECONDS": "2",
        "AUDIENCE_SYNC_CONFIG": str(tmp_path / "worker.toml"),
        **extra,
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{k.removeprefix("AUDIENCE_SYNC_").lower(): v for k, v in env.items() if k.startswith("AUDIENCE_SYNC_")},
    )


def _sender(settings: Settings):  # type: ignore[no-untyped-def]
    """Send through this test's own broker and queue (the module's Celery app is the environment's)."""
    app = make_celery(settings)

    def send(mapping: str, full: bool) -> str:
        sent = app.send_task("audience_sync.sync_mapping", args=[mapping], kwargs={"full": full}, queue=settings.queue)
        return str(sent.id)

    return send


def _file_mapping(env: dict[str, str], tmp_path: Path, *, batch: int = 500, delay: float = 0.1) -> Path:
    write_config(
        Path(env["AUDIENCE_SYNC_CONFIG"]),
        f"""
        [destinations.out]
        type = "file"
        directory = "{tmp_path / "aud"}"
        batch_size = {batch}
        batch_delay = {delay}

        [[mappings]]
        name = "big"
        segment = "buyers"
        destination = "out"
        audience = "big"
        """,
    )
    return audience_path(tmp_path / "aud", "big")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[CeleryWorker]]:
    started: list[CeleryWorker] = []
    yield started
    for worker in started:
        worker.stop()


def _start(workers: list[CeleryWorker], env: dict[str, str], tmp_path: Path) -> CeleryWorker:
    worker = CeleryWorker(env, env["AUDIENCE_SYNC_QUEUE"], tmp_path / f"worker{len(workers)}.log")
    worker.start()
    workers.append(worker)
    return worker


def test_a_killed_pool_child_is_redelivered_at_once_and_takes_over_its_dead_lock(
    redis_url: str, key_prefix: str, tmp_path: Path, workers: list[CeleryWorker]
) -> None:
    now = datetime.now(UTC)
    shop = SyntheticStore(seed=9, customers=300, now=now)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000, faults=Faults(latency=0.08)) as emulator:
        # a lock that would outlive the test: only a takeover of the dead holder's lock lets it finish soon
        env = _env(redis_url, key_prefix, tmp_path, AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN=DEFAULT_TOKEN)
        env["AUDIENCE_SYNC_LOCK_TTL_SECONDS"] = "300"
        write_config(
            Path(env["AUDIENCE_SYNC_CONFIG"]),
            f"""
            [destinations.out]
            type = "file"
            directory = "{tmp_path / "aud"}"
            [[mappings]]
            name = "buyers"
            segment = "buyers"
            destination = "out"
            audience = "buyers"
            """,
            shop_url=emulator.url,
        )
        settings = _settings(env)
        store = open_store(settings.database_url)
        app = make_celery(settings)
        worker = _start(workers, env, tmp_path)
        app.send_task("audience_sync.cycle", queue=settings.queue)
        client = redis.Redis.from_url(redis_url)
        holder = wait_for(lambda: client.get(f"{key_prefix}:lock:cycle"), 60, "the cycle to hold its lock")
        wait_for(lambda: store.recent_runs() and store.recent_runs()[0].counts.get("pages"), 90, "the pull to start")
        os.kill(int(json.loads(holder)["pid"]), signal.SIGKILL)  # what the OOM killer does to a pool child
        killed_at = time.monotonic()

        run = wait_for(
            lambda: next((r for r in store.recent_runs(mapping="buyers") if r.status == "ok"), None),
            90,
            "the redelivered cycle to sync",
        )
        assert run.counts["added"] == run.counts["eligible"] > 0
        assert time.monotonic() - killed_at < 60  # far sooner than the 300 s lock would have expired
        pulls = [r.status for r in store.recent_runs() if r.kind == "pull"]
        assert pulls[-1] == "interrupted" and pulls[0] == "ok"  # the killed run is closed as what it was
        log = worker.log()
        assert "took over" in log and "deferred" not in log
        store.dispose()
        app.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary to restart")
def test_a_redis_restart_mid_sync_loses_no_sync(tmp_path: Path, workers: list[CeleryWorker]) -> None:
    broker = ThrowawayRedis()
    broker.start()
    try:
        env = _env(broker.url, "restart", tmp_path)
        file = _file_mapping(env, tmp_path)
        settings = _settings(env)
        store = open_store(settings.database_url)
        keys = seed_segment(store, "buyers", 20_000)
        desired = {sha256_hex(f"member{k[1:]}@example.com") for k in keys}
        app = make_celery(settings)
        _start(workers, env, tmp_path)
        app.send_task("audience_sync.sync_mapping", args=["big"], queue=settings.queue)
        wait_for(lambda: len(read_audience(file)) >= 4000, 60, "the sync to get going")
        broker.stop()  # no persistence: the queue and the locks are gone with it
        time.sleep(1)
        broker.start()
        assert len(read_audience(file)) < len(desired), "the restart must land mid-sync"

        # the store, not the queue, says what is owed: the next cycle's request finds the mapping unfinished
        queued = request_sync(store, settings, "big", full=False, reason="cycle", send=_sender(settings))
        assert not queued.coalesced
        wait_for(lambda: read_audience(file) == desired, 120, "the sync to converge after the restart")
        wait_for(lambda: store.recent_runs(mapping="big")[0].status == "ok", 90, "a finished run")
        assert len(store.acknowledged("big")) == len(desired)
        assert {r.status for r in store.recent_runs(mapping="big")[1:]} & {"interrupted", "failed"}
        store.dispose()
        app.close()
    finally:
        for worker in workers:
            worker.stop()
        broker.close()


def test_two_workers_never_run_one_mapping_at_once_under_waits_longer_than_the_lock(
    redis_url: str, key_prefix: str, tmp_path: Path, workers: list[CeleryWorker]
) -> None:
    # three throttles of 3 s each: far longer than the 2 s lock, which only the heartbeat keeps alive
    emulator = MetaEmulator(access_token="two-token", regain_minutes=0.05, faults=Faults(throttle_storm=3))  # type: ignore[arg-type]
    emulator.create_audience("L1")
    with emulator:
        env = _env(redis_url, key_prefix, tmp_path, AUDIENCE_SYNC_META_ACCESS_TOKEN="two-token")
        write_config(
            Path(env["AUDIENCE_SYNC_CONFIG"]),
            f'[destinations.d]\ntype = "meta"\nbase_url = "{emulator.url}/v25.0"\n'
            '[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "d"\naudience = "L1"\n'
            'options = { keys = ["EMAIL"] }\n',
        )
        settings = _settings(env)
        store = open_store(settings.database_url)
        seed_segment(store, "buyers", 3_000)
        app = make_celery(settings)
        _start(workers, env, tmp_path)
        _start(workers, env, tmp_path)
        for _ in range(2):
            app.send_task("audience_sync.sync_mapping", args=["big"], queue=settings.queue)
        wait_for(lambda: len([r for r in store.recent_runs(mapping="big") if r.status == "ok"]) == 2, 120, "both syncs")
        runs = sorted(store.recent_runs(mapping="big"), key=lambda r: r.started_at)
        assert runs[0].finished_at is not None and runs[0].finished_at <= runs[1].started_at  # never overlapping
        assert runs[0].counts["added"] == 3_000 and runs[1].counts["added"] == 0
        held = {encode_identity([k for k, _ in r], tuple(v for _, v in r)) for r in emulator.audience("L1")}
        assert held == set(store.acknowledged("big")) and len(held) == 3_000
        store.dispose()
        app.close()


def test_a_resync_stuck_behind_a_busy_lock_says_why_and_stays_owed(
    redis_url: str, key_prefix: str, tmp_path: Path, workers: list[CeleryWorker]
) -> None:
    env = _env(redis_url, key_prefix, tmp_path, AUDIENCE_SYNC_LOCK_WAIT_SECONDS="3")
    file = _file_mapping(env, tmp_path, delay=0)
    settings = _settings(env)
    store = open_store(settings.database_url)
    seed_segment(store, "buyers", 50)
    client = redis.Redis.from_url(redis_url)
    busy = RedisLock(client, f"{key_prefix}:lock:sync:big", 60)  # a live holder: this test process
    assert busy.acquire()
    _start(workers, env, tmp_path)
    request_sync(store, settings, "big", full=True, reason="full replace", send=_sender(settings))
    deferred = wait_for(
        lambda: next((r for r in store.recent_runs(mapping="big") if r.status == "deferred"), None),
        60,
        "a deferred run",
    )
    assert deferred.error is not None and "stays owed" in deferred.error and f"pid {os.getpid()}" in deferred.error
    owed = store.sync_request("big")
    assert owed is not None and owed.full and owed.task_id is None  # still owed, free to be sent again
    busy.release()
    request_sync(
        store, settings, "big", full=False, reason="cycle", send=_sender(settings)
    )  # the next cycle asks again
    done = wait_for(
        lambda: next((r for r in store.recent_runs(mapping="big") if r.status == "ok"), None), 60, "the owed sync"
    )
    assert done.counts["full"] is True and len(read_audience(file)) == 50
    assert store.sync_request("big") is None
    store.dispose()


def test_a_sync_longer_than_a_task_may_run_continues_in_checkpointed_tasks(
    redis_url: str, key_prefix: str, tmp_path: Path, workers: list[CeleryWorker]
) -> None:
    env = _env(redis_url, key_prefix, tmp_path, AUDIENCE_SYNC_TASK_BUDGET_SECONDS="1")
    file = _file_mapping(env, tmp_path, batch=250, delay=0.2)
    settings = _settings(env)
    store = open_store(settings.database_url)
    keys = seed_segment(store, "buyers", 5_000)
    worker = _start(workers, env, tmp_path)
    request_sync(store, settings, "big", full=False, reason="resync", send=_sender(settings))
    wait_for(
        lambda: store.recent_runs(mapping="big") and store.recent_runs(mapping="big")[0].status == "ok", 90, "sync"
    )
    runs = store.recent_runs(mapping="big")
    assert len(runs) == 1 and runs[0].counts["added"] == 5_000  # one run row tells the whole story
    assert read_audience(file) == {sha256_hex(f"member{k[1:]}@example.com") for k in keys}
    assert worker.log().count("audience_sync.sync_mapping[") >= 3 * 2  # received + succeeded, three tasks or more
    store.dispose()
