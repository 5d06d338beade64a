"""A first backfill of a large Shopify store: bulk export against windowed paging, in the same run.

Builds a synthetic store (about two orders per customer), serves it from the Shopify contract
emulator over loopback HTTP with its rate limit lifted, and pulls it into a fresh SQLite store
through the real worker: once by bulk export (the default for a first pull) and once paged, the
peer. Paging a million orders locally is slow for reasons of this emulator, not of Shopify, so the
peer pages a sample (``--paged-orders``) and its figures are scaled per order. Both report the
query cost Shopify would charge, and from it how long the paged backfill would wait for the cost
bucket on the standard plan (100 points/s) and on Plus (1,000 points/s).

    .venv/bin/python bench/backfill.py [--orders 1000000] [--paged-orders 20000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
from connectors.shopify.synthetic import SyntheticStore
from worker.config import parse_config
from worker.cycle import pull
from worker.factory import make_runtime
from worker.settings import Settings
from worker.store import open_store

NOW = datetime(2026, 11, 1, tzinfo=UTC)
PLANS = {"standard (100 points/s)": 100.0, "Plus (1,000 points/s)": 1000.0}


@dataclass
class Measured:
    orders: int
    customers: int
    lines: int
    seconds: float
    requests: int
    points: int
    #: of ``points``: the bulk operation's own queries (start, polls); the rest is paging
    bulk_points: int
    bytes_downloaded: int

    def per_order(self, value: float) -> float:
        return value / max(1, self.orders)


def backfill(shop: SyntheticStore, *, bulk: bool) -> Measured:
    emulator = ShopifyEmulator(shop, restore_rate=1e9, bucket_size=1e9)
    with tempfile.TemporaryDirectory() as tmp, emulator:
        config = parse_config(
            {"source": {"type": "shopify", "shop_url": emulator.url, "bulk_backfill": bulk}, "mappings": []},
            Path(tmp) / "bench.toml",
        )
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{Path(tmp) / 'store.sqlite3'}",
            bulk_dir=Path(tmp) / "bulk",
            secrets={"AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": DEFAULT_TOKEN},
        )
        store = open_store(settings.database_url)
        started = time.perf_counter()
        result = pull(store, config, settings, make_runtime(settings, sleep=time.sleep), now=NOW)
        seconds = time.perf_counter() - started
        if result.status not in ("ok", "partial"):
            raise SystemExit(f"the {'bulk' if bulk else 'paged'} backfill failed: {result.error}")
        counts = store.counts()
        lines = len(store.lines_frame())
        store.dispose()
        return Measured(
            orders=counts["orders"],
            customers=counts["customers"],
            lines=lines,
            seconds=seconds,
            requests=int(result.source_stats.get("requests", 0)),
            points=sum(actual for _, _, actual in emulator.cost_log),
            bulk_points=sum(actual for query, _, actual in emulator.cost_log if "bulkOperation" in query),
            bytes_downloaded=sum(int(b.get("downloaded_bytes") or 0) for b in result.bulk.values()),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders in the bulk-backfilled store")
    parser.add_argument("--paged-orders", type=int, default=20_000, help="orders in the paged peer's store")
    args = parser.parse_args()

    print(f"building a synthetic store of about {args.orders:,} orders …", flush=True)
    started = time.perf_counter()
    big = SyntheticStore(seed=7, customers=max(1, args.orders // 2), now=NOW)
    print(f"  {len(big.orders):,} orders, {len(big.customers):,} customers in {time.perf_counter() - started:.0f}s")
    bulk = backfill(big, bulk=True)
    del big
    sample = SyntheticStore(seed=7, customers=max(1, args.paged_orders // 2), now=NOW)
    paged = backfill(sample, bulk=False)

    print()
    print(f"{'':28} {'bulk export':>16} {'paged (peer)':>16}")
    print(f"{'orders stored':28} {bulk.orders:>16,} {paged.orders:>16,}")
    print(f"{'customers stored':28} {bulk.customers:>16,} {paged.customers:>16,}")
    print(f"{'line items stored':28} {bulk.lines:>16,} {paged.lines:>16,}")
    print(f"{'wall time here (s)':28} {bulk.seconds:>16.1f} {paged.seconds:>16.1f}")
    print(f"{'orders/s here':28} {bulk.orders / bulk.seconds:>16,.0f} {paged.orders / paged.seconds:>16,.0f}")
    print(f"{'GraphQL requests':28} {bulk.requests:>16,} {paged.requests:>16,}")
    print(f"{'query cost (points)':28} {bulk.points:>16,} {paged.points:>16,}")
    print(f"{'points per order':28} {bulk.per_order(bulk.points):>16.3f} {paged.per_order(paged.points):>16.2f}")
    print(f"{'export downloaded (MB)':28} {bulk.bytes_downloaded / 1e6:>16.1f} {'-':>16}")
    print()
    scale = bulk.orders / max(1, paged.orders)
    paged_here = paged.seconds * scale
    print(f"a paged backfill of {bulk.orders:,} orders (the peer scaled by {scale:,.1f}x):")
    ratio = paged_here / bulk.seconds
    print(f"  here, without any rate limit: about {paged_here / 60:.1f} min ({ratio:.1f}x the bulk path)")
    for plan, rate in PLANS.items():
        waiting = paged.per_order(paged.points) * bulk.orders / rate
        after = bulk.points - bulk.bulk_points
        print(
            f"  on Shopify {plan}: {paged.per_order(paged.points):.1f} points/order x {bulk.orders:,} orders"
            f" / {rate:,.0f} = {waiting / 3600:.1f} h waiting for the cost bucket; the bulk path:"
            f" {bulk.bulk_points:,} points for the exports ({bulk.bulk_points / rate:.1f} s) and"
            f" {after:,} for the paging after them ({after / rate:.0f} s)"
        )
    print(
        "  (the paging after the exports re-reads the overlap window before their start: the synthetic shop has"
        " an unusual share of its records updated in its last minutes)"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\npeak memory of this benchmark (the synthetic store included): {rss:.1f} GB")


if __name__ == "__main__":
    main()
