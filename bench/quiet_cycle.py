"""A cycle with no new data, and one after 1% of customers changed, through the real recompute, engine
and store into file destinations (no HTTP, no rate limit): 9 mappings over the default segments.

The peer, measured in the same run, is the full path every sync took before (`--full-check`
behaviour: segment and profiles re-read, every identity re-derived, the acknowledged set read whole):

    .venv/bin/python -m bench.quiet_cycle --customers 1000000 --orders 2000000
    .venv/bin/python -m bench.quiet_cycle --reuse /tmp/as-quiet/store.sqlite3   # loaded once, kept
    .venv/bin/python -m bench.quiet_cycle --reuse /tmp/as-quiet/store.sqlite3 --worker   # syncs in Celery
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.segments import NOW, customer_id, email, generate, load_store
from worker.config import AppConfig, parse_config
from worker.cycle import recompute, sync_mapping
from worker.factory import make_runtime
from worker.settings import Settings
from worker.store import Store, open_store

MAPPINGS = 9


def config_data(store: Store, directory: Path) -> dict[str, Any]:
    sizes = store.segment_sizes()  # the largest default segments (after a first recompute)
    names = sorted(sizes, key=lambda s: -sizes[s])[:MAPPINGS]
    return {
        "source": {"type": "shopify", "shop_url": "https://example.myshopify.com"},
        "destinations": {
            "ads": {"type": "file", "directory": str(directory), "audience_kind": "ads", "batch_size": 200_000},
            "mail": {"type": "file", "directory": str(directory), "audience_kind": "email", "batch_size": 200_000},
        },
        "mappings": [
            {"name": f"m{i}", "segment": s, "destination": "mail" if i % 3 == 0 else "ads", "audience": f"a{i}"}
            for i, s in enumerate(names)
        ],
    }


def config_for(store: Store, directory: Path) -> AppConfig:
    return parse_config(config_data(store, directory), Path("bench.toml"))


def toml_text(data: dict[str, Any]) -> str:
    """The config as TOML (strings and integers only, which is all :func:`config_data` holds)."""

    def value(v: Any) -> str:
        return str(v) if isinstance(v, int) else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[source]", *(f"{k} = {value(v)}" for k, v in data["source"].items())]
    for name, dest in data["destinations"].items():
        lines += [f"[destinations.{name}]", *(f"{k} = {value(v)}" for k, v in dest.items())]
    for mapping in data["mappings"]:
        lines += ["[[mappings]]", *(f"{k} = {value(v)}" for k, v in mapping.items())]
    return "\n".join(lines) + "\n"


class WorkerSyncs:
    """The syncs in a Celery worker process (one pool process, a throwaway Redis), as deployed: the
    worker never recomputes, so it plans from the store's change log."""

    def __init__(self, url: str, data: dict[str, Any], workdir: Path) -> None:
        from tests.services import ThrowawayRedis

        self.broker = ThrowawayRedis()
        self.broker.start()
        config = workdir / "worker.toml"
        config.write_text(toml_text(data), encoding="utf-8")
        prefix = f"quiet-{time.time_ns() % 10**8}"
        env = {
            "AUDIENCE_SYNC_REDIS_URL": self.broker.url,
            "AUDIENCE_SYNC_DATABASE_URL": url,
            "AUDIENCE_SYNC_KEY_PREFIX": prefix,
            "AUDIENCE_SYNC_QUEUE": f"{prefix}-q",
            "AUDIENCE_SYNC_CONFIG": str(config),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        from tests.worker_process import CeleryWorker
        from worker.celery_app import make_celery

        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            **{k.removeprefix("AUDIENCE_SYNC_").lower(): v for k, v in env.items() if k.startswith("AUDIENCE_")},
        )
        self.worker = CeleryWorker(env, env["AUDIENCE_SYNC_QUEUE"], workdir / "worker.log")
        self.worker.start()
        self.app = make_celery(self.settings)
        self.names = [m["name"] for m in data["mappings"]]
        while "ready" not in self.worker.log():
            time.sleep(0.1)

    def run(self, store: Store) -> tuple[int, list[str]]:
        """Every mapping synced once in the worker; (members moved, each run's plan)."""
        before = {r.id for r in store.recent_runs(limit=200)}
        for name in self.names:
            self.app.send_task("audience_sync.sync_mapping", args=[name], queue=self.settings.queue)
        while True:
            runs = [r for r in store.recent_runs(limit=200) if r.id not in before and r.kind == "sync"]
            if len(runs) == len(self.names) and all(r.status != "running" for r in runs):
                break
            time.sleep(0.02)
        bad = [r for r in runs if r.status != "ok"]
        assert not bad, [(r.mapping, r.status, r.error) for r in bad]
        moved = sum(int(r.counts.get("added") or 0) + int(r.counts.get("removed") or 0) for r in runs)
        return moved, sorted({str(r.counts.get("plan")) for r in runs})

    def close(self) -> None:
        self.worker.stop()
        self.app.close()
        self.broker.close()


@contextlib.contextmanager
def old_path(store: Store) -> Iterator[None]:
    """The full path: no results marker, so no process state is used (what every sync did before)."""
    marker = store.results_marker
    store.results_marker = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.results_marker = marker  # type: ignore[method-assign]


def cycle(store: Store, config: AppConfig, settings: Settings, worker: WorkerSyncs | None = None) -> dict[str, Any]:
    runtime = make_runtime(settings, sleep=lambda _: None)
    started = time.perf_counter()
    recompute(store, config, NOW)
    computed = time.perf_counter()
    moved, plans = 0, ["in process"]
    if worker is not None:
        moved, plans = worker.run(store)
    else:
        for name in config.mappings:
            result = sync_mapping(store, config, settings, runtime, name, now=NOW)
            assert result.status == "ok", (name, result.status, result.error)
            moved += result.added + result.removed
    done = time.perf_counter()
    return {
        "recompute": computed - started,
        "syncs": done - computed,
        "total": done - started,
        "moved": moved,
        "plans": "/".join(plans),
    }


def change_one_percent(store: Store, customers: int) -> None:
    """1% of the customers: half renamed, half with a new order now (unique per call)."""
    tag = f"{time.time_ns()}"
    picked = np.arange(0, customers, 100, dtype=np.int64)
    renamed, buyers = picked[::2], picked[1::2]
    store.upsert_customers(
        [
            {"customer_id": c, "source": "bench", "email": e, "first_name": f"R{tag}", "email_consent": "SUBSCRIBED"}
            | {"updated_at": NOW}
            for c, e in zip(customer_id(renamed), email(renamed, customers), strict=True)
        ]
    )
    store.upsert_orders(
        [
            {
                "order_id": f"q{tag}-{i}",
                "source": "bench",
                "customer_id": c,
                "email": e,
                "created_at": NOW,
                "updated_at": NOW,
                "total": 40.0,
                "currency": "USD",
                "cancelled": False,
                "test": False,
                "has_discount": False,
            }
            for i, (c, e) in enumerate(zip(customer_id(buyers), email(buyers, customers), strict=True))
        ],
        [],
    )


def show(label: str, figures: dict[str, Any]) -> None:
    print(
        f"{label:<44} total {figures['total']:7.2f} s  (recompute {figures['recompute']:6.2f} s,"
        f" {MAPPINGS} syncs {figures['syncs']:7.2f} s, {figures['moved']} members sent; plan {figures['plans']})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=2_000_000)
    parser.add_argument("--reuse", type=Path, help="a store file kept between runs (loaded and synced once)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-peer", action="store_true", help="do not measure the full path")
    parser.add_argument(
        "--worker", action="store_true", help="syncs in a Celery worker process (recompute here), as deployed"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.reuse or Path(tmp) / "store.sqlite3"
        fresh = not path.exists()
        url = f"sqlite:///{path}"
        if fresh:
            started = time.perf_counter()
            load_store(url, generate(args.customers, args.orders, seed=11))
            seconds = time.perf_counter() - started
            print(f"store loaded: {args.customers:,} customers, {args.orders:,} orders in {seconds:.0f} s")
        store = open_store(url)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        if not store.segment_sizes():
            recompute(store, config_for(store, path.parent), NOW)
        config = config_for(store, path.parent / "audiences")
        worker = WorkerSyncs(url, config_data(store, path.parent / "audiences"), Path(tmp)) if args.worker else None
        try:
            where = "the worker" if worker else "this process"
            show(f"first cycle in {where} (initial sync if new)", cycle(store, config, settings, worker))
            show("second cycle (settles what the first sent)", cycle(store, config, settings, worker))
            for r in range(args.rounds):
                show(f"quiet cycle, no new data ({r + 1})", cycle(store, config, settings, worker))
            if not args.skip_peer:
                with old_path(store):
                    show("peer: quiet cycle, full path", cycle(store, config, settings))
            for r in range(args.rounds):
                change_one_percent(store, args.customers)
                show(f"cycle after 1% of customers changed ({r + 1})", cycle(store, config, settings, worker))
            if not args.skip_peer:
                change_one_percent(store, args.customers)
                with old_path(store):
                    show("peer: cycle after 1% changed, full path", cycle(store, config, settings))
            show("quiet cycle after the peer", cycle(store, config, settings, worker))
            show("quiet cycle", cycle(store, config, settings, worker))
        finally:
            if worker is not None:
                worker.close()
        store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
