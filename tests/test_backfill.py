"""The first pull of a store by bulk export, against the Shopify emulator's bulk operations: what it
stores (exactly what paging would), what it misses and recovers, and how it resumes after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
from connectors.shopify.synthetic import SyntheticStore
from tests.conftest import make_settings
from tests.helpers import write_config
from worker.config import load_config
from worker.cycle import PullResult, pull
from worker.erasure import request_erasure
from worker.factory import make_runtime
from worker.settings import Settings
from worker.store import Store, open_store

NOW = datetime(2026, 5, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


def widen(shop: SyntheticStore, gid: str, count: int, first_id: int) -> None:
    """Give an order ``count`` line items (more than a page of them, so paging needs follow-ups)."""
    products = shop.products
    shop.node(gid)["lineItems"]["nodes"] = [
        {
            "id": f"gid://shopify/LineItem/{first_id + k}",
            "sku": products[k % 40]["sku"],
            "quantity": 1 + k % 3,
            "product": {"id": products[k % 40]["id"]},
        }
        for k in range(count)
    ]


def run_pull(store: Store, path: Path, settings: Settings, **kwargs: Any) -> PullResult:
    runtime = make_runtime(settings, sleep=lambda s: time.sleep(min(s, 0.05)))
    return pull(store, load_config(path), settings, runtime, now=NOW, **kwargs)


def settings_for(database_url: str, path: Path, tmp_path: Path, **extra: Any) -> Settings:
    return make_settings(
        database_url=database_url,
        config=path,
        bulk_dir=tmp_path / "bulk",
        secrets={"AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": DEFAULT_TOKEN},
        **extra,
    )


def held(store: Store) -> tuple[pd.DataFrame, pd.DataFrame, Counter[tuple[Any, ...]]]:
    """What the store holds, in a form two stores can be compared by (line positions aside)."""
    orders = store.orders_frame().sort_values("order_id").reset_index(drop=True)
    customers = store.customers_frame().sort_values("customer_id").reset_index(drop=True)
    lines = store.lines_frame()
    return orders, customers, Counter(zip(lines.order_id, lines.product_id, lines.sku, lines.quantity, strict=True))


def lines_of(shop: SyntheticStore) -> Counter[tuple[Any, ...]]:
    return Counter(
        (o["id"], line["product"]["id"] if line["product"] else None, line["sku"], line["quantity"])
        for o in shop.orders
        for line in o["lineItems"]["nodes"]
    )


def test_a_first_pull_by_bulk_export_stores_exactly_what_paging_would(database_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=31, customers=150, now=NOW, malformed=True)
    widen(shop, shop.orders[3]["id"], 40, 900_000_000)
    widen(shop, shop.orders[9]["id"], 260, 910_000_000)
    shop.orders[12]["lineItems"]["nodes"][0]["sku"] = "S" * 1_000  # fitted, with a warning, on both paths
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        bulk_path = write_config(tmp_path / "bulk.toml", "", shop_url=emulator.url)
        paged_path = write_config(
            tmp_path / "paged.toml", "", shop_url=emulator.url, source_options="bulk_backfill = false"
        )
        reference = open_store(f"sqlite:///{tmp_path / 'paged.sqlite3'}")
        paged = run_pull(
            reference, paged_path, settings_for(reference.engine.url.render_as_string(False), paged_path, tmp_path)
        )
        assert paged.bulk == {} and paged.pages > 2

        store = open_store(database_url)
        result = run_pull(store, bulk_path, settings_for(database_url, bulk_path, tmp_path))

        assert result.status == "partial", result.error  # the malformed orders, as on the paged path
        assert {s: b["phase"] for s, b in result.bulk.items()} == {"customers": "done", "orders": "done"}
        assert result.source_stats["bulk_started"] == 2 and result.source_stats["line_followups"] == 0
        for mine, theirs in zip(held(store), held(reference), strict=True):
            if isinstance(mine, pd.DataFrame):
                pd.testing.assert_frame_equal(mine, theirs)
            else:
                assert mine == theirs
        assert Counter(store.lines_frame().order_id)[shop.orders[9]["id"]] == 260

        # the same problems, reported the same way, in this pull's run
        def problems(s: Store, run_id: int | None) -> dict[str, str]:
            # a line is named by its position when paged, by its id in an export: the order is the same
            return {ref.split(" line ")[0]: reason for ref, reason in s.problems(run_id or 0) if "export" not in ref}

        mine, theirs = problems(store, result.run_id), problems(reference, paged.run_id)
        assert set(mine) == set(theirs) and any("sku: truncated from 1,000" in r for r in mine.values())
        assert store.run(result.run_id or 0).counts["bulk"]["orders"]["lines"] == len(store.lines_frame())

        # incremental paging goes on from when the export started, and the file host never saw the token
        started = min(e.created_at for e in emulator.bulk.exports.values())
        assert store.get_watermark("shopify", "orders") == started
        assert emulator.bulk.file_requests and not any(
            DEFAULT_TOKEN in str(h) or "x-shopify-access-token" in {k.lower() for k in h}
            for h in emulator.bulk.file_requests
        )
        assert not list((tmp_path / "bulk").glob("*.jsonl"))  # a finished export's file is deleted
        store.dispose()
        reference.dispose()


def test_what_changes_while_the_export_runs_is_read_by_the_paging_that_follows(tmp_path: Path) -> None:
    shop = SyntheticStore(seed=32, customers=120, now=NOW)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        start = emulator.mutations["bulkOperationRunQuery"]
        changed: list[Any] = []

        def start_then_change(args: dict[str, Any]) -> dict[str, Any]:
            answer = start(args)
            if not changed and "orders" in str(args.get("query")):
                # the export has its start time and list of orders; the shop moves on before it reads any
                changed.append(shop.advance(days=0.01, new_orders=12))
            return answer

        emulator.mutations["bulkOperationRunQuery"] = start_then_change
        path = write_config(tmp_path / "c.toml", "", shop_url=emulator.url)
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        result = run_pull(store, path, settings_for(store.engine.url.render_as_string(False), path, tmp_path))
        assert result.status == "ok", result.error
        new_orders = set(changed[0].new_orders)
        assert len(new_orders) == 12
        stored = set(store.orders_frame().order_id)
        assert new_orders <= stored and len(stored) == len(shop.orders)
        assert result.bulk["orders"]["records"] == len(shop.orders) - 12  # not in the export: paged after it
        store.dispose()


def test_a_failed_export_keeps_its_partial_rows_and_paging_reads_the_rest(tmp_path: Path) -> None:
    shop = SyntheticStore(seed=33, customers=100, now=NOW)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        emulator.bulk.fail_after = 150  # objects: the customers export (100) completes, the orders one fails
        path = write_config(tmp_path / "f.toml", "", shop_url=emulator.url)
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        result = run_pull(store, path, settings_for(store.engine.url.render_as_string(False), path, tmp_path))
        assert result.status == "ok", result.error
        assert result.bulk["orders"]["phase"] == "fell_back" and result.bulk["customers"]["phase"] == "done"
        assert 0 < result.bulk["orders"]["records"] < len(shop.orders)
        assert store.counts() == {"orders": len(shop.orders), "customers": len(shop.customers)}
        lines = Counter(store.lines_frame().order_id)
        assert all(lines[o["id"]] == len(o["lineItems"]["nodes"]) for o in shop.orders)
        warnings = [reason for ref, reason in store.problems(result.run_id or 0) if ref == "orders export"]
        assert warnings == [
            f"warning: bulk export FAILED: stored the {result.bulk['orders']['records']} records of its partial "
            "file; paging reads the rest"
        ]
        assert "orders bulk export fell_back" in result.summary()
        store.dispose()


def test_an_expired_download_address_starts_the_export_again(tmp_path: Path) -> None:
    shop = SyntheticStore(seed=34, customers=80, now=NOW)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        path = write_config(tmp_path / "e.toml", "", shop_url=emulator.url)
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        settings = settings_for(store.engine.url.render_as_string(False), path, tmp_path)
        # pulls out of time after one step each; each export's address expires once it is ready to download
        expired: set[str] = set()
        for _ in range(30):
            emulator.bulk.wait()
            result = run_pull(store, path, settings, deadline=time.monotonic())
            assert result.status == "ok", result.error
            for row in store.bulk_history():
                if row.phase == "downloading" and row.operation_id and row.stream not in expired:
                    emulator.bulk.expire(row.operation_id)  # the stored address now answers 400 ExpiredToken
                    expired.add(row.stream)
            if all(r.phase == "done" for r in store.bulk_history()):
                break
        assert len(expired) == 2
        assert run_pull(store, path, settings).status == "ok"  # and the paging after the exports
        assert len(emulator.bulk.exports) == 4  # each export ran once more
        finished = {r.stream: (r.phase, r.counts.get("restarts")) for r in store.bulk_history()}
        assert finished == {"customers": ("done", 1), "orders": ("done", 1)}
        assert store.counts() == {"orders": len(shop.orders), "customers": len(shop.customers)}
        store.dispose()


class Killed(BaseException):
    """The process dies: nothing after this point runs, not even ``except Exception``."""


def test_a_pull_killed_while_storing_the_file_resumes_from_the_last_stored_chunk(
    database_url: str, tmp_path: Path
) -> None:
    shop = SyntheticStore(seed=35, customers=200, now=NOW)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        path = write_config(tmp_path / "k.toml", "", shop_url=emulator.url)
        store = open_store(database_url)
        settings = settings_for(database_url, path, tmp_path, bulk_chunk_rows=100)
        chunks: list[int] = []

        def die_on_third_orders_chunk(counts: dict[str, Any]) -> None:
            if counts.get("stream") == "orders" and counts.get("bulk") == "storing":
                chunks.append(int(counts["records"]))
                if len(chunks) == 3:
                    raise Killed

        with pytest.raises(Killed):
            run_pull(store, path, settings, progress=die_on_third_orders_chunk)
        (row,) = [r for r in store.bulk_history() if r.stream == "orders"]
        assert row.phase == "ingesting" and row.ingested > 0 and row.counts["records"] == chunks[-1]

        result = run_pull(store, path, settings)
        assert result.status == "ok", result.error
        assert len(emulator.bulk.exports) == 2  # resumed: the export was not run again
        file_requests = len(emulator.bulk.file_requests)
        assert file_requests == 2  # nor downloaded again
        (done,) = [r for r in store.bulk_history() if r.stream == "orders"]
        assert done.id == row.id and done.phase == "done" and done.counts["records"] == len(shop.orders)
        assert store.counts() == {"orders": len(shop.orders), "customers": len(shop.customers)}
        assert held(store)[2] == lines_of(shop)  # none twice, none lost
        store.dispose()


def test_backfill_killed_mid_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    """The real thing: `audience-sync backfill` in its own process, SIGKILLed while downloading."""
    shop = SyntheticStore(seed=36, customers=400, now=NOW - timedelta(days=1))
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        emulator.bulk.download_rate = 150_000  # bytes/s: the orders file takes a few seconds
        path = write_config(tmp_path / "d.toml", "", shop_url=emulator.url)
        database = tmp_path / "store.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCE_SYNC_")}
        env |= {
            "PYTHONPATH": str(ROOT),
            "AUDIENCE_SYNC_DATABASE_URL": f"sqlite:///{database}",
            "AUDIENCE_SYNC_CONFIG": str(path),
            "AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": DEFAULT_TOKEN,
            "AUDIENCE_SYNC_BULK_DIR": str(tmp_path / "bulk"),
        }
        command = [sys.executable, "-m", "worker.cli", "backfill"]
        log = tmp_path / "first.log"
        with log.open("w") as out:
            first = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        store = open_store(f"sqlite:///{database}")
        try:
            deadline = time.monotonic() + 60
            while True:
                assert first.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the orders export never started downloading"
                rows = [r for r in store.bulk_history() if r.stream == "orders"] if database.exists() else []
                if rows and rows[0].phase == "downloading" and rows[0].downloaded > 0:
                    break
                time.sleep(0.1)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        (killed,) = [r for r in store.bulk_history() if r.stream == "orders"]
        on_disk = (tmp_path / "bulk" / f"shopify-orders-{killed.id}.jsonl").stat().st_size
        assert 0 < on_disk < (killed.file_size or 0)

        emulator.bulk.download_rate = None
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "orders: export gid://shopify/BulkOperation/" in again.stdout and "done" in again.stdout
        assert len(emulator.bulk.exports) == 2  # resumed, not restarted
        status = subprocess.run(
            [sys.executable, "-m", "worker.cli", "status"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
        assert "bulk exports" in status and "shopify orders: done (completed)" in status
        assert "bulk-files" not in status  # the signed download address is never shown
        ranges = [h.get("Range") or h.get("range") for h in emulator.bulk.file_requests]
        assert ranges[-1] == f"bytes={on_disk}-"
        assert store.counts() == {"orders": len(shop.orders), "customers": len(shop.customers)}
        assert held(store)[2] == lines_of(shop)
        store.dispose()


def test_an_erasure_during_a_backfill_deletes_the_downloaded_file_and_the_person_stays_out(tmp_path: Path) -> None:
    shop = SyntheticStore(seed=37, customers=120, now=NOW)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        path = write_config(tmp_path / "x.toml", "", shop_url=emulator.url)
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        settings = settings_for(store.engine.url.render_as_string(False), path, tmp_path, bulk_chunk_rows=50)

        def die_storing_orders(counts: dict[str, Any]) -> None:
            if counts.get("stream") == "orders" and counts.get("bulk") == "storing":
                raise Killed

        with pytest.raises(Killed):
            run_pull(store, path, settings, progress=die_storing_orders)
        files = list((tmp_path / "bulk").glob("*.jsonl"))
        assert files, "the killed pull left its downloaded export"
        person = next(c for c in shop.customers if c["defaultEmailAddress"] and shop.orders_of(c["id"]))
        email = person["defaultEmailAddress"]["emailAddress"]
        assert any(email.encode() in f.read_bytes() for f in files)

        fetched = len(emulator.bulk.file_requests)
        request_erasure(store, load_config(path), email, origin="cli")
        assert not list((tmp_path / "bulk").glob("*.jsonl"))  # the file that held the person is gone
        result = run_pull(store, path, settings)
        assert result.status == "ok", (result.error, store.problems(result.run_id or 0))
        assert len(emulator.bulk.file_requests) > fetched  # the unfinished exports were fetched again, and stored
        assert person["id"] not in set(store.customers_frame().customer_id)
        assert not set(o["id"] for o in shop.orders_of(person["id"])) & set(store.orders_frame().order_id)
        assert store.counts()["orders"] == len(shop.orders) - len(shop.orders_of(person["id"]))
        store.dispose()
