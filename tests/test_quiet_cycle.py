"""A quiet cycle sends nothing and reads no profile table per mapping; a change after a quiet period is
still synced exactly (the incremental plan of worker/sync.py against the full computation)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bench.quiet_cycle import config_for
from bench.segments import NOW, generate, load_store
from tests.conftest import make_settings
from worker.config import AppConfig
from worker.cycle import recompute, sync_mapping
from worker.factory import build_destination, make_runtime
from worker.store import Store, open_store
from worker.store.sync_state import forget
from worker.sync import desired_identities


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement run on the store's real engine meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def run(store: Store, config: AppConfig, **changes: Any) -> int:
    """Recompute and sync every mapping; returns the members sent."""
    settings = make_settings()
    runtime = make_runtime(settings)
    now = NOW + timedelta(**changes)
    recompute(store, config, now)
    sent = 0
    for name in config.mappings:
        result = sync_mapping(store, config, settings, runtime, name, now=now)
        assert result.status == "ok", result.error
        sent += result.added + result.removed
    return sent


def exact(store: Store, config: AppConfig) -> None:
    """Every mapping acknowledges exactly its desired identities, computed the full way."""
    settings = make_settings()
    runtime = make_runtime(settings)
    for name, mapping in config.mappings.items():
        dest = build_destination(mapping.destination, config.destinations[mapping.destination], settings, runtime)
        members = store.members(store.segment_keys(mapping.segment)).values()
        desired = set(desired_identities(dest, members, config.options[name])[0])
        assert desired == set(store.acknowledged(name)), name
        assert not store.inflight(name) and not store.rejected(name)


def cycle(store: Store, config: AppConfig, **changes: Any) -> int:
    sent = run(store, config, **changes)
    exact(store, config)
    return sent


def test_quiet_cycles_send_nothing_and_changes_still_sync_exactly(database_url: str, tmp_path: Path) -> None:
    load_store(database_url, generate(600, 4_000, seed=5, line_share=0.1))
    store = open_store(database_url)
    recompute(store, config_for(store, tmp_path), NOW)
    config = config_for(store, tmp_path / "aud")
    assert len(config.mappings) >= 6
    assert cycle(store, config) > 0  # initial sync
    cycle(store, config)

    with statements(store) as seen:
        assert run(store, config) == 0
    exact(store, config)
    syncs = [s for s in seen if "acknowledged" in s or "profiles" in s]
    assert not [s for s in syncs if "FROM profiles" in s], "a quiet cycle reads no profile"
    assert not [s for s in syncs if "FROM acknowledged" in s and " IN (" not in s and "erasure_id" not in s]

    forget()  # a new process: the segment and the profiles are read once for all mappings
    with statements(store) as seen:
        assert run(store, config, minutes=1) == 0
    exact(store, config)
    assert len([s for s in seen if "FROM profiles" in s]) == 1

    # after a quiet period: consent withdrawn (an email list removes), a rename, new buyers
    first = next(iter(config.mappings.values()))
    held = {store.acknowledged(first.name)[i] for i in store.acknowledged(first.name)}
    who = store.members(sorted(k for k in held if "@" not in k)[:2])
    (quits, email), (renamed, other) = [(k, m.email) for k, m in who.items()]
    store.upsert_customers(
        [
            {"customer_id": quits, "source": "t", "email": email, "email_consent": "UNSUBSCRIBED", "updated_at": NOW},
            {"customer_id": renamed, "source": "t", "email": other, "first_name": "Renamed", "updated_at": NOW}
            | {"email_consent": "SUBSCRIBED"},
        ]
    )
    store.upsert_orders(
        [
            {
                "order_id": f"late-{i}",
                "source": "t",
                "customer_id": None,
                "email": f"late{i}@example.org",
                "created_at": NOW,
                "updated_at": NOW,
                "total": 700.0,
                "currency": "USD",
                "cancelled": False,
                "test": False,
                "has_discount": False,
            }
            for i in range(5)
        ],
        [],
    )
    with statements(store) as seen:
        assert run(store, config, minutes=2) > 0
    exact(store, config)
    assert len([s for s in seen if "FROM profiles" in s and "segment_members" not in s]) <= len(config.mappings)
    assert cycle(store, config, days=40) > 0  # windows slide: members leave and join with no new data
    assert cycle(store, config, days=40) == 0
    store.dispose()


@pytest.mark.redis
def test_syncs_in_a_celery_worker_replay_the_stored_change_log(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    """The recompute runs here, the syncs in a worker process that never recomputed: after its first
    (full) sync the worker plans incrementally from the store's change log, and stays exact."""
    from tests.helpers import write_config
    from tests.worker_process import CeleryWorker, wait_for
    from worker.celery_app import make_celery
    from worker.config import load_config

    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    load_store(url, generate(600, 4_000, seed=5, line_share=0.1))
    store = open_store(url)
    recompute(store, config_for(store, tmp_path), NOW)
    sizes = store.segment_sizes()
    segments = sorted(sizes, key=lambda s: -sizes[s])[:3]
    path = write_config(
        tmp_path / "worker.toml",
        f'[destinations.mail]\ntype = "file"\ndirectory = "{tmp_path / "aud"}"\naudience_kind = "email"\n'
        + "".join(
            f'[[mappings]]\nname = "m{i}"\nsegment = "{s}"\ndestination = "mail"\naudience = "a{i}"\n'
            for i, s in enumerate(segments)
        ),
    )
    config = load_config(path)
    env = {
        "AUDIENCE_SYNC_REDIS_URL": redis_url,
        "AUDIENCE_SYNC_DATABASE_URL": url,
        "AUDIENCE_SYNC_KEY_PREFIX": key_prefix,
        "AUDIENCE_SYNC_QUEUE": f"{key_prefix}-q",
        "AUDIENCE_SYNC_CONFIG": str(path),
    }
    settings = make_settings(
        database_url=url, redis_url=redis_url, key_prefix=key_prefix, queue=env["AUDIENCE_SYNC_QUEUE"]
    )
    worker = CeleryWorker(env, env["AUDIENCE_SYNC_QUEUE"], tmp_path / "worker.log")
    app = make_celery(settings)

    def synced_in_worker() -> list[str]:
        """One sync of every mapping in the worker; each run's plan kind."""
        before = {r.id for r in store.recent_runs(limit=100)}
        for name in config.mappings:
            app.send_task("audience_sync.sync_mapping", args=[name], queue=settings.queue)

        def done() -> list[Any] | None:
            runs = [r for r in store.recent_runs(limit=100) if r.id not in before and r.kind == "sync"]
            return runs if len(runs) == len(config.mappings) and all(r.status != "running" for r in runs) else None

        runs = wait_for(done, 60, "every mapping's sync in the worker")
        assert {r.status for r in runs} == {"ok"}, [r.error for r in runs]
        exact(store, config)
        return sorted(str(r.counts.get("plan")) for r in runs)

    try:
        worker.start()
        assert synced_in_worker() == ["full"] * 3  # a new process checks everyone
        recompute(store, config, NOW + timedelta(minutes=1))
        assert synced_in_worker() == ["incremental"] * 3  # nothing recorded in the worker's memory
        some = sorted(store.segment_keys(segments[0]))[:3]
        store.upsert_customers(
            [
                {"customer_id": k, "source": "t", "email": f"moved-{k}@example.org", "updated_at": NOW}
                | {"email_consent": "SUBSCRIBED"}
                for k in some
                if "@" not in k
            ]
        )
        recompute(store, config, NOW + timedelta(minutes=2))
        assert synced_in_worker() == ["incremental"] * 3  # the new addresses replayed from the store's log
    finally:
        worker.stop()
        app.close()
        store.dispose()
