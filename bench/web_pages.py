"""How fast the marketer's web app answers at 1M customers: every page, signed in, over real HTTP.

Seeds a fresh SQLite store with stored recompute results the size of a large shop (profiles,
segment memberships, a size history of 30 recomputes, run rows, rejected members), serves the
control API with uvicorn on loopback, signs in as a browser does, and loads each page and its JSON
twin ``--loads`` times. The peer, measured in the same run, is ``/healthz`` (no store, no template):
the cost of HTTP, the session check and the server itself. Target: every page under 300 ms.

    .venv/bin/python bench/web_pages.py [--customers 1000000] [--loads 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn

from worker.api import create_app
from worker.settings import Settings
from worker.store import Store, open_store

TOKEN = "bench-admin-token-0123456789abcdefghijklmnop"
SEGMENTS = {"buyers": 0.62, "engaged_30d": 0.18, "lapsed_60_180": 0.21, "lapsed_180_plus": 0.35, "whales": 0.2}
CONFIG = """
[source]
type = "shopify"
shop_url = "https://bench.myshopify.com"

[destinations.files]
type = "file"
directory = "{directory}"
identifier = "email_sha256"
audience_kind = "ads"
{mappings}
"""
MAPPING = """
[[mappings]]
name = "{segment}-files"
segment = "{segment}"
destination = "files"
audience = "{segment}"
"""


def seed(store: Store, customers: int) -> None:
    keys = [f"gid://shopify/Customer/{7_000_000_000 + n}" for n in range(customers)]
    store.replace_profiles(
        [
            {
                "customer_key": key,
                "email": f"shopper{n}@example.com",
                "phone": None,
                "first_name": None,
                "last_name": None,
                "country": "US",
                "email_consent": "SUBSCRIBED" if n % 3 else "UNSUBSCRIBED",
            }
            for n, key in enumerate(keys)
        ]
    )
    store.replace_segments({name: keys[: int(share * customers)] for name, share in SEGMENTS.items()})
    for cycle in range(30):  # a month of recomputes: the size history the charts draw, as a recompute writes it
        run_id = store.start_run("recompute")
        sizes = {name: int(share * customers) - 40 * (30 - cycle) for name, share in SEGMENTS.items()}
        changes = {name: {"size": size, "joined": 40, "left": 0} for name, size in sizes.items()}
        stats = {name: Stats(share, {o: 0.3 for o in SEGMENTS if o != name}) for name, share in SEGMENTS.items()}
        store.record_segment_history(run_id, datetime.now(UTC) - timedelta(days=30 - cycle), changes, stats)
        store.finish_run(run_id, "ok", {"segments": sizes})
        for name in SEGMENTS:
            mapping = f"{name}-files"
            sync = store.start_run("sync", mapping)
            store.finish_run(sync, "ok", {"added": 40, "removed": 3, "rejected": 0})
    store.record_rejections(
        "buyers-files",
        None,
        [
            {"identity": f"x{n}", "customer_key": keys[n], "operation": "add", "code": "refused", "reason": "why"}
            for n in range(200)
        ],
    )


@dataclass
class Stats:
    revenue_share: float
    overlaps: dict[str, float]


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def timed(client: httpx.Client, path: str, loads: int) -> list[float]:
    seconds = []
    for _ in range(loads):
        started = time.perf_counter()
        answer = client.get(path)
        seconds.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:200]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            CONFIG.format(directory=Path(tmp) / "aud", mappings="".join(MAPPING.format(segment=s) for s in SEGMENTS))
        )
        database = f"sqlite:///{Path(tmp) / 'store.sqlite3'}"
        store = open_store(database)
        started = time.perf_counter()
        seed(store, args.customers)
        print(f"seeded {args.customers:,} customers' stored results in {time.perf_counter() - started:.0f}s")
        store.dispose()
        settings = Settings(_env_file=None, database_url=database, config=config, api_token=TOKEN)
        pages = [
            "/app/",
            "/app/segments/buyers",
            "/app/mappings/buyers-files",
            "/app/runs",
            "/app/runs?step=sync",
            "/app/erasures",
            "/preview",
        ]
        with serve(settings) as url, httpx.Client(base_url=url, follow_redirects=True, timeout=120) as browser:
            signed = browser.post("/app/sign-in", data={"token": TOKEN})
            if signed.url.path != "/app/":
                raise SystemExit(f"sign-in failed: {signed.status_code}")
            peer = timed(browser, "/healthz", args.loads)
            print(f"\n{'page':36} {'median ms':>10} {'p95 ms':>8} {'x peer':>7}  under 300 ms")
            peer_median = statistics.median(peer)
            print(f"{'/healthz (peer)':36} {peer_median * 1000:>10.1f} {_p95(peer) * 1000:>8.1f} {1:>7.1f}")
            for path in pages:
                seconds = timed(browser, path, args.loads)
                median = statistics.median(seconds)
                verdict = "yes" if _p95(seconds) < 0.3 else "NO"
                ratio = median / peer_median
                print(f"{path:36} {median * 1000:>10.1f} {_p95(seconds) * 1000:>8.1f} {ratio:>7.0f}  {verdict}")
            dry = timed(browser, "/app/mappings/buyers-files/dry-run", 3)
            print(
                f"{'dry run of buyers-files (an action)':36} {statistics.median(dry) * 1000:>10.1f}"
                f" {max(dry) * 1000:>8.1f} {statistics.median(dry) / peer_median:>7.0f}  (computes the diff)"
            )


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


if __name__ == "__main__":
    main()
