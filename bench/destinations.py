"""Throughput of a 50,000-member initial sync and a 10% diff sync into each destination emulator.

Runs the real engine and store (SQLite in a temp dir) against the Mailchimp and Meta contract
emulators over loopback HTTP, with and without injected faults (10% 5xx, a throttle storm), and
prints members/s. The file destination, which does no HTTP, is measured in the same run as the peer.

    .venv/bin/python bench/destinations.py [--members 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from connectors.file.destination import FileConfig, FileDestination
from connectors.kernel.destination import Destination
from connectors.kernel.emulator import EmulatorServer, Faults
from connectors.kernel.runtime import Runtime
from connectors.mailchimp.destination import MailchimpConfig, MailchimpDestination
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.meta.destination import MetaConfig, MetaDestination
from connectors.meta.emulator import MetaEmulator
from worker.config import parse_config
from worker.cycle import sync_mapping
from worker.factory import make_runtime
from worker.settings import Settings
from worker.store import Store, open_store


def seed(store: Store, start: int, count: int) -> None:
    rows = [
        {
            "customer_key": f"k{n}",
            "email": f"person{n}@example.com",
            "phone": None,
            "first_name": None,
            "last_name": None,
            "country": None,
            "email_consent": "SUBSCRIBED",
        }
        for n in range(start, start + count)
    ]
    store.replace_profiles(rows)
    store.replace_segments({"buyers": [r["customer_key"] for r in rows]})


def measure(
    label: str, dest_type: str, make: Callable[[Runtime], Destination], options: dict[str, object], members: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 's.sqlite3'}")
        config = parse_config(
            {
                "source": {"type": "shopify", "shop_url": "https://example.myshopify.com"},
                "destinations": {"d": {"type": dest_type}},
                "mappings": [
                    {"name": "m", "segment": "buyers", "destination": "d", "audience": "L1", "options": options}
                ],
            },
            Path("bench.toml"),
        )
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        runtime = make_runtime(settings, sleep=lambda _: None, key_prefix=f"bench-{uuid.uuid4().hex[:6]}")
        runtime.retry_attempts = 12
        runtime.retry_max_seconds = 3600  # Meta asks for 60 s per throttle (injected sleep: no real wait)
        figures = []
        for phase, start in (("initial", 0), ("diff 10%", members // 10)):
            seed(store, start, members)
            destination = make(runtime)
            started = time.perf_counter()
            result = sync_mapping(store, config, settings, runtime, "m", destination=destination)
            seconds = time.perf_counter() - started
            moved = result.added + result.removed
            retries = destination.stats().get("retries", 0)
            destination.close()
            figures.append(
                f"{phase}: {moved:>6} changes in {seconds:6.2f} s = {moved / seconds:>8,.0f} members/s "
                f"(retries {retries}, {result.status})"
            )
        store.dispose()
    print(f"{label:34} " + " | ".join(figures))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=50_000)
    args = parser.parse_args()
    n = args.members
    print(f"sync throughput, {n:,} members (SQLite store, loopback emulators, 2-core machine)")
    with tempfile.TemporaryDirectory() as tmp:
        measure(
            "file (peer: no HTTP)",
            "file",
            lambda rt: FileDestination("d", FileConfig(directory=Path(tmp), batch_size=1000), rt),
            {},
            n,
        )
    for faults_label, faulty in (("clean", False), ("10% 5xx + storm", True)):
        emulators: list[EmulatorServer] = []

        def faults(faulty: bool = faulty) -> Faults | None:
            return Faults(error_rate=0.1, throttle_storm=10) if faulty else None

        mailchimp = MailchimpEmulator(api_key="bench-us1", faults=faults())
        meta = MetaEmulator(access_token="bench", faults=faults())
        for emulator in (mailchimp, meta):
            emulator.start()
            emulators.append(emulator)
        mailchimp.create_list("L1")
        meta.create_audience("L1")
        measure(
            f"mailchimp ({faults_label})",
            "mailchimp",
            lambda rt, url=mailchimp.url: MailchimpDestination(
                "d",
                MailchimpConfig(base_url=url + "/3.0", secret="bench-us1"),
                rt,  # type: ignore[arg-type]
            ),
            {"tag": "bench"},
            n,
        )
        measure(
            f"meta ({faults_label})",
            "meta",
            lambda rt, url=meta.url: MetaDestination(
                "d",
                MetaConfig(base_url=url + "/v25.0", secret="bench", requests_per_second=100, burst=100),  # type: ignore[arg-type]
                rt,
            ),
            {"keys": ["EMAIL"]},
            n,
        )
        for emulator in emulators:
            emulator.stop()


if __name__ == "__main__":
    main()
