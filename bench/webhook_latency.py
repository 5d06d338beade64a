"""Webhook latency: from an order placed at the store to its customer in the destination audience.

A 5,000-customer sandbox shop is pulled once into a fresh SQLite store; then 1,000 customers who are not
"engaged" each place an order, delivered as a signed ``orders/create`` webhook to the real control API
(uvicorn, real HTTP) in one burst. A watcher reads the destination's audience file (the file destination,
``engaged_30d``) and notes when each customer's hash appears. Prints p50 / p95 / max and how many cycles
the burst became. Target: p95 under 60 s.

    .venv/bin/python bench/webhook_latency.py [--orders 1000] [--customers 5000]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.kernel.identifiers import sha256_hex
from connectors.shopify.synthetic import SyntheticStore
from connectors.shopify.webhook_emulator import new_order, sign
from tests.services import free_port
from worker.api import create_app
from worker.config import load_config
from worker.runner import run_cycle
from worker.sandbox import Sandbox
from worker.settings import Settings
from worker.store import open_store, schema

SECRET = "bench-webhook-secret"
CONFIG = """
[source]
type = "shopify"
shop_url = "{shop}"

[destinations.files]
type = "file"
directory = "{aud}"
identifier = "email_sha256"
audience_kind = "ads"

[[mappings]]
name = "engaged-30d-file"
segment = "engaged_30d"
destination = "files"
audience = "engaged_30d"

[[mappings]]
name = "buyers-file"
segment = "buyers"
destination = "files"
audience = "buyers"
"""


def audience(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open(encoding="utf-8") as handle:
        return {row[0] for n, row in enumerate(csv.reader(handle)) if n and row}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=5000)
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    work = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    aud = work / "aud"
    (work / "pull.toml").write_text(CONFIG.format(shop="sandbox", aud=aud), encoding="utf-8")
    (work / "api.toml").write_text(CONFIG.format(shop="https://bench.myshopify.com", aud=aud), encoding="utf-8")
    url = f"sqlite:///{work / 'store.sqlite3'}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env_file=None,
        database_url=url,
        api_token="b" * 40,
        shopify_webhook_secret=SECRET,
        redis_url="redis://127.0.0.1:1/0",  # no broker: the embedded path (the API runs the cycles)
        config=work / "api.toml",
    )
    shop = SyntheticStore(seed=7, customers=args.customers, now=now - timedelta(minutes=5))
    store = open_store(url)
    started = time.monotonic()
    with Sandbox(now, store=shop) as sandbox:
        config, resolved = sandbox.resolve(load_config(work / "pull.toml"), settings)
        run_cycle(store, config, resolved, now=now)
    print(f"initial pull and cycle of {args.customers:,} customers: {time.monotonic() - started:.1f}s")
    engaged = store.segment_keys("engaged_30d")
    buyers = [c for c in shop.customers if c["defaultEmailAddress"] and c["id"] not in engaged][: args.orders]
    expected = {sha256_hex(c["defaultEmailAddress"]["emailAddress"]): c for c in buyers}
    with store.engine.connect() as conn:
        recomputes_before = conn.execute(schema.runs.select().where(schema.runs.c.kind == "recompute")).all()

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)

    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()
    target = aud / "engaged_30d.csv"

    def watch() -> None:
        while not done.is_set():
            now_seen = time.monotonic()
            for digest in audience(target) & expected.keys():
                seen.setdefault(digest, now_seen)
            if len(seen) == len(expected):
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    answers: list[float] = []
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=httpx.Limits(max_connections=32))

    def deliver(item: tuple[int, tuple[str, dict[str, object]]]) -> None:
        n, (digest, customer) = item
        body = json.dumps(new_order(customer, 8_000_000 + n, datetime.now(UTC))).encode()
        headers = {"X-Shopify-Hmac-Sha256": sign(body, SECRET), "X-Shopify-Webhook-Id": f"bench-{n}"}
        sent[digest] = time.monotonic()  # the order is placed: Shopify sends its webhook now
        t = time.monotonic()
        answer = client.post("/webhooks/shopify/orders/create", content=body, headers=headers)
        answers.append(time.monotonic() - t)
        answer.raise_for_status()

    burst = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(deliver, enumerate(expected.items())))
    burst_seconds = time.monotonic() - burst
    watcher.join(180)
    done.set()
    server.should_exit = True
    client.close()

    latencies = sorted(seen[d] - sent[d] for d in seen)
    missing = len(expected) - len(seen)
    with store.engine.connect() as conn:
        recomputes = len(conn.execute(schema.runs.select().where(schema.runs.c.kind == "recompute")).all())
        webhook_runs = len(conn.execute(schema.runs.select().where(schema.runs.c.kind == "webhook")).all())
    cycles = recomputes - len(recomputes_before)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(f"burst: {len(expected):,} signed orders/create webhooks sent in {burst_seconds:.1f}s over real HTTP")
    print(f"answer time: p50 {statistics.median(answers) * 1000:.0f} ms, max {max(answers) * 1000:.0f} ms")
    print(f"became {cycles} recompute cycles ({webhook_runs} inbox drains), not {len(expected):,}")
    print(
        f"order placed -> member in the destination audience: p50 {q[49]:.1f}s, p95 {q[94]:.1f}s, "
        f"max {latencies[-1]:.1f}s; {missing} never arrived"
    )
    print(f"target p95 < 60 s: {'met' if q[94] < 60 and not missing else 'NOT met'}")
    store.dispose()


if __name__ == "__main__":
    main()
