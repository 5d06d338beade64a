"""A real Celery worker process consuming from real Redis: a full cycle, and SIGKILL mid-sync."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.file.destination import audience_path, read_audience
from connectors.kernel.identifiers import sha256_hex
from tests.helpers import seed_segment, write_config
from tests.worker_process import CeleryWorker, wait_for
from worker.celery_app import make_celery
from worker.settings import Settings
from worker.store import open_store

pytestmark = pytest.mark.redis


@pytest.fixture
def worker_env(redis_url: str, key_prefix: str, tmp_path: Path) -> dict[str, str]:
    return {
        "AUDIENCE_SYNC_REDIS_URL": redis_url,
        "AUDIENCE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "AUDIENCE_SYNC_KEY_PREFIX": key_prefix,
        "AUDIENCE_SYNC_QUEUE": f"{key_prefix}-q",
        "AUDIENCE_SYNC_VISIBILITY_TIMEOUT_SECONDS": "12",
        "AUDIENCE_SYNC_LOCK_TTL_SECONDS": "3",
        "AUDIENCE_SYNC_CONFIG": str(tmp_path / "worker.toml"),
    }


@pytest.fixture
def celery_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(worker_env, worker_env["AUDIENCE_SYNC_QUEUE"], tmp_path / "worker.log")
    yield worker
    worker.stop()


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{k.removeprefix("AUDIENCE_SYNC_").lower(): v for k, v in env.items()},
    )


def test_sigkill_mid_sync_then_restart_converges_exactly(
    worker_env: dict[str, str], celery_worker: CeleryWorker, tmp_path: Path
) -> None:
    audiences = tmp_path / "aud"
    write_config(
        Path(worker_env["AUDIENCE_SYNC_CONFIG"]),
        f"""
        [destinations.out]
        type = "file"
        directory = "{audiences}"
        batch_size = 500
        batch_delay = 0.1

        [[mappings]]
        name = "big"
        segment = "buyers"
        destination = "out"
        audience = "big"
        """,
    )
    settings = _settings(worker_env)
    store = open_store(settings.database_url)
    keys = seed_segment(store, "buyers", 20_000)
    desired = {sha256_hex(f"member{k[1:]}@example.com") for k in keys}
    file = audience_path(audiences, "big")

    app = make_celery(settings)
    celery_worker.start()
    app.send_task("audience_sync.sync_mapping", args=["big"], queue=settings.queue)

    # kill the whole worker (parent and pool child) once part of the audience is written
    wait_for(lambda: len(read_audience(file)) >= 4000, 60, "the sync to get going")
    celery_worker.kill()
    partial = read_audience(file)
    assert 0 < len(partial) < len(desired), "the kill must land mid-sync for this test to mean anything"

    celery_worker.start()  # the unacknowledged task comes back after the visibility timeout
    wait_for(lambda: read_audience(file) == desired, 120, "the restarted worker to converge")
    wait_for(
        lambda: any(r.status == "ok" and r.mapping == "big" for r in store.recent_runs(mapping="big")),
        30,
        "a finished run row",
    )
    assert read_audience(file) == desired  # nothing missing, nothing extra
    assert len(store.acknowledged("big")) == 20_000
    statuses = [r.status for r in store.recent_runs(mapping="big")]
    assert statuses[0] == "ok"
    assert "interrupted" in statuses  # the killed run stays visible, closed as interrupted
    store.dispose()
    app.close()


def test_worker_runs_a_whole_cycle_from_the_shopify_emulator(
    worker_env: dict[str, str], celery_worker: CeleryWorker, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
    from connectors.shopify.synthetic import SyntheticStore

    now = datetime.now(UTC)
    shop = SyntheticStore(seed=5, customers=300, now=now)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        write_config(
            Path(worker_env["AUDIENCE_SYNC_CONFIG"]),
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
        os.environ["AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN"] = DEFAULT_TOKEN
        celery_worker.env["AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN"] = DEFAULT_TOKEN
        settings = _settings(worker_env)
        app = make_celery(settings)
        celery_worker.start()
        app.send_task("audience_sync.cycle", queue=settings.queue)
        store = open_store(settings.database_url)
        run = wait_for(
            lambda: next((r for r in store.recent_runs(mapping="buyers") if r.status in ("ok", "partial")), None),
            90,
            "the cycle's sync of the buyers mapping",
        )
        os.environ.pop("AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN", None)
    buyers = store.segment_keys("buyers")
    assert run.counts["added"] == run.counts["eligible"] > 0
    assert len(read_audience(audience_path(tmp_path / "aud", "buyers"))) == run.counts["eligible"]
    assert len(buyers) >= run.counts["eligible"]
    kinds = {r.kind for r in store.last_runs()}
    assert {"pull", "recompute", "sync"} <= kinds
    store.dispose()
    app.close()


@pytest.mark.parametrize("platform", ["mailchimp", "meta"])
def test_sigkill_mid_sync_to_a_real_destination_converges(
    platform: str, worker_env: dict[str, str], celery_worker: CeleryWorker, tmp_path: Path
) -> None:
    from connectors.kernel.emulator import Faults
    from connectors.mailchimp.emulator import MailchimpEmulator
    from connectors.meta.destination import encode_identity
    from connectors.meta.emulator import MetaEmulator

    count = 6_000 if platform == "mailchimp" else 30_000
    emulator: MailchimpEmulator | MetaEmulator
    if platform == "mailchimp":
        emulator = MailchimpEmulator(api_key="kill-key-us1", faults=Faults(latency=0.15))
        emulator.create_list("L1")
        secret_env = {"AUDIENCE_SYNC_MAILCHIMP_API_KEY": "kill-key-us1"}
        body = '[destinations.d]\ntype = "mailchimp"\nbase_url = "URL/3.0"\n'
        options = 'options = { tag = "vip" }'
    else:
        emulator = MetaEmulator(access_token="kill-token", faults=Faults(latency=1.5))
        emulator.create_audience("L1")
        secret_env = {"AUDIENCE_SYNC_META_ACCESS_TOKEN": "kill-token"}
        body = '[destinations.d]\ntype = "meta"\nbase_url = "URL/v25.0"\n'
        options = 'options = { keys = ["EMAIL"] }'

    def members_now() -> set[str]:
        if isinstance(emulator, MailchimpEmulator):
            segment = emulator.segment_by_name("L1", "vip")
            return set() if segment is None else emulator.segment_members("L1", segment)
        return {encode_identity([k for k, _ in r], tuple(v for _, v in r)) for r in emulator.audience("L1")}

    with emulator:
        write_config(
            Path(worker_env["AUDIENCE_SYNC_CONFIG"]),
            body.replace("URL", emulator.url)
            + f'[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "d"\naudience = "L1"\n{options}\n',
        )
        celery_worker.env.update(secret_env)
        settings = _settings(worker_env)
        store = open_store(settings.database_url)
        seed_segment(store, "buyers", count)
        app = make_celery(settings)
        celery_worker.start()
        app.send_task("audience_sync.sync_mapping", args=["big"], queue=settings.queue)
        wait_for(lambda: len(members_now()) >= count // 3, 90, "the sync to get going")
        celery_worker.kill()
        assert len(members_now()) < count, "the kill must land mid-sync"

        celery_worker.start()
        wait_for(lambda: any(r.status == "ok" for r in store.recent_runs(mapping="big")), 150, "the restarted worker")
        assert members_now() == set(store.acknowledged("big"))
        assert len(members_now()) == count  # nothing missing, nothing extra
        store.dispose()
        app.close()
    assert "kill-key-us1" not in celery_worker.log() and "kill-token" not in celery_worker.log()
