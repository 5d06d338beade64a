"""A cycle with no new data, and one after 1% of customers changed, through the real recompute, engine
and store into file destinations (no HTTP, no rate limit): 9 mappings over the default segments.

The peer, measured in the same run, is the full path every sync took before (`--full-check`
behaviour: segment and profiles re-read, every identity re-derived, the acknowledged set read whole):

    .venv/bin/python -m bench.quiet_cycle --customers 1000000 --orders 2000000
    .venv/bin/python -m bench.quiet_cycle --reuse /tmp/as-quiet/store.sqlite3   # loaded once, kept
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


def config_for(store: Store, directory: Path) -> AppConfig:
    sizes = store.segment_sizes()  # the largest default segments (after a first recompute)
    names = sorted(sizes, key=lambda s: -sizes[s])[:MAPPINGS]
    return parse_config(
        {
            "source": {"type": "shopify", "shop_url": "https://example.myshopify.com"},
            "destinations": {
                "ads": {"type": "file", "directory": str(directory), "audience_kind": "ads", "batch_size": 200_000},
                "mail": {"type": "file", "directory": str(directory), "audience_kind": "email", "batch_size": 200_000},
            },
            "mappings": [
                {"name": f"m{i}", "segment": s, "destination": "mail" if i % 3 == 0 else "ads", "audience": f"a{i}"}
                for i, s in enumerate(names)
            ],
        },
        Path("bench.toml"),
    )


@contextlib.contextmanager
def old_path(store: Store) -> Iterator[None]:
    """The full path: no results marker, so no process state is used (what every sync did before)."""
    marker = store.results_marker
    store.results_marker = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.results_marker = marker  # type: ignore[method-assign]


def cycle(store: Store, config: AppConfig, settings: Settings) -> dict[str, Any]:
    runtime = make_runtime(settings, sleep=lambda _: None)
    started = time.perf_counter()
    recompute(store, config, NOW)
    computed = time.perf_counter()
    moved = 0
    for name in config.mappings:
        result = sync_mapping(store, config, settings, runtime, name, now=NOW)
        assert result.status == "ok", (name, result.status, result.error)
        moved += result.added + result.removed
    done = time.perf_counter()
    return {"recompute": computed - started, "syncs": done - computed, "total": done - started, "moved": moved}


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
        f" {MAPPINGS} syncs {figures['syncs']:7.2f} s, {figures['moved']} members sent)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=2_000_000)
    parser.add_argument("--reuse", type=Path, help="a store file kept between runs (loaded and synced once)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-peer", action="store_true", help="do not measure the full path")
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
        show("first cycle in this process (initial sync if new)", cycle(store, config, settings))
        show("second cycle (settles what the first sent)", cycle(store, config, settings))
        for r in range(args.rounds):
            show(f"quiet cycle, no new data ({r + 1})", cycle(store, config, settings))
        if not args.skip_peer:
            with old_path(store):
                show("peer: quiet cycle, full path", cycle(store, config, settings))
        for r in range(args.rounds):
            change_one_percent(store, args.customers)
            show(f"cycle after 1% of customers changed ({r + 1})", cycle(store, config, settings))
        if not args.skip_peer:
            change_one_percent(store, args.customers)
            with old_path(store):
                show("peer: cycle after 1% changed, full path", cycle(store, config, settings))
        show("quiet cycle after the peer (full check, then quiet)", cycle(store, config, settings))
        show("quiet cycle", cycle(store, config, settings))
        store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
