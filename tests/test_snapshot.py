"""The columnar snapshot follows the store: incremental upserts, erasure reloads, a checked cache file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from connectors.kernel.records import OrderRecord
from worker.ingest import validate_orders
from worker.segments import build_customer_table, compute_segments, table_from_facts
from worker.store import Store, open_store
from worker.store.snapshot import Snapshot

NOW = datetime(2026, 3, 31, 12, tzinfo=UTC)


def _put(store: Store, order_id: str, customer: str | None, email: str, days: int, total: str) -> None:
    when = NOW - timedelta(days=days)
    record = OrderRecord(
        order_id=order_id,
        source="test",
        customer_id=customer,
        email=email,
        created_at=when,
        updated_at=when,
        total=Decimal(total),
        currency="USD",
    )
    checked = validate_orders([record])
    store.upsert_orders(checked.orders, checked.lines)


def _agree(store: Store, snap: Snapshot) -> dict[str, pd.Index]:
    fast = compute_segments(table_from_facts(snap.refresh()), NOW)
    slow = compute_segments(build_customer_table(store.orders_frame(), store.customers_frame()), NOW)
    assert {k: list(v) for k, v in fast.items()} == {k: list(v) for k, v in slow.items()}
    return fast


def test_refresh_is_incremental_and_follows_refunds_and_erasure(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url)
    _put(store, "o1", "c1", "ann@example.com", 10, "100.00")
    _put(store, "o2", None, "bob@example.com", 100, "5.00")
    snap = Snapshot(store, tmp_path / "snap.npz")
    _agree(store, snap)
    assert snap.stats["full"]
    _put(store, "o1", "c1", "ann@example.com", 10, "0.00")  # refunded: same order, new version
    _put(store, "o3", None, "ann@example.com", 2, "7.00")  # guest order merged into c1
    result = _agree(store, snap)
    assert not snap.stats["full"] and snap.stats["changed_rows"] == 2
    assert list(result["buyers"]) == ["bob@example.com", "c1"]
    assert len(snap.orders.row) == 3

    # a new process starts from the cache file and reads only what changed since
    _put(store, "o4", "c2", "cat@example.com", 1, "3.00")
    fresh = Snapshot(store, tmp_path / "snap.npz")
    _agree(store, fresh)
    # the cache was written after the full load: o1's new version, o3 and o4 are read, o2 is not
    assert not fresh.stats["full"] and fresh.stats["changed_rows"] == 3

    store.request_erasure("bob@example.com", mappings=[], origin="test")  # deletions: every snapshot reloads
    result = _agree(store, snap)
    assert snap.stats["full"] and "bob@example.com" not in set(result["buyers"])
    store.dispose()


def test_a_corrupt_or_foreign_cache_is_rebuilt(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    _put(store, "o1", "c1", "ann@example.com", 10, "10.00")
    cache = tmp_path / "snap.npz"
    cache.write_bytes(b"not a cache")
    snap = Snapshot(store, cache)
    _agree(store, snap)
    assert snap.stats["full"]
    other = open_store(f"sqlite:///{tmp_path / 'other.sqlite3'}")  # another database, same cache file
    _put(other, "x1", "z9", "zed@example.com", 1, "1.00")
    foreign = Snapshot(other, cache)
    fast = compute_segments(table_from_facts(foreign.refresh()), NOW)
    assert foreign.stats["full"] and list(fast["buyers"]) == ["z9"]
    store.dispose()
    other.dispose()


def test_order_ids_are_read_from_the_store_only_where_two_orders_tie(database_url: str, tmp_path: Path) -> None:
    """The snapshot and its cache file hold no order ids (10M strings at scale): two orders of one customer
    at one timestamp are ordered by id, read from the store by row number, as the pandas reference does."""
    store = open_store(database_url)
    when = NOW - timedelta(days=3)
    ids = {"o-b": "google / cpc", "o-a-ö" + "x" * 100: "newsletter / email", "o-c": "direct"}
    for oid, channel in ids.items():
        record = OrderRecord(
            order_id=oid,
            source="test",
            customer_id="c1",
            email="ann@example.com",
            created_at=when,
            updated_at=when,
            total=Decimal("5.00"),
            currency="USD",
            channel=channel,
        )
        checked = validate_orders([record])
        store.upsert_orders(checked.orders, checked.lines)
    cache = tmp_path / "snap.npz"
    first = Snapshot(store, cache).refresh()
    assert sorted(first.order_ids()) == sorted(ids)
    assert cache.exists() and b"o-b" not in cache.read_bytes() and ("x" * 100).encode() not in cache.read_bytes()
    again = Snapshot(store, cache)
    table = table_from_facts(again.refresh())
    assert not again.stats["full"]
    reference = build_customer_table(store.orders_frame(), store.customers_frame())
    assert table.frame["first_channel"].tolist() == reference.frame["first_channel"].tolist() == ["newsletter / email"]
    store.dispose()


def test_unchanged_refresh_hands_out_the_same_facts_and_table(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    _put(store, "o1", "c1", "ann@example.com", 10, "10.00")
    snap = Snapshot(store)
    facts = snap.refresh()
    table = table_from_facts(facts, reuse=True)
    assert snap.refresh() is facts and table_from_facts(snap.refresh(), reuse=True) is table
    assert table_from_facts(facts) is not table  # without reuse: always computed
    _put(store, "o2", None, "ann@example.com", 1, "5.00")  # a guest order of c1
    fresh = snap.refresh()
    assert fresh is not facts
    again = table_from_facts(fresh, reuse=True)
    assert again is not table and list(again.order_count) == [2]
    _agree(store, snap)
    store.dispose()


def _customer(store: Store, customer: str, email: str, first_name: str, days: int) -> None:
    row = {
        "customer_id": customer,
        "source": "test",
        "email": email,
        "first_name": first_name,
        "email_consent": "UNKNOWN",
    }
    store.upsert_customers([row | {"updated_at": NOW - timedelta(days=days)}])


def test_key_resolution_is_kept_only_while_no_key_input_changed(database_url: str) -> None:
    """A refund or a rename keeps the resolved keys; a new customer taking a guest's email does not
    (the guest's orders become that customer's), and results always equal the pandas reference."""
    store = open_store(database_url)
    _customer(store, "c1", "ann@example.com", "Ann", 30)
    _put(store, "o1", "c1", "ann@example.com", 10, "10.00")
    _put(store, "o2", None, "guest@example.com", 5, "20.00")
    snap = Snapshot(store)
    assert list(_agree(store, snap)["buyers"]) == ["c1", "guest@example.com"]
    _put(store, "o1", "c1", "ann@example.com", 10, "0.00")  # refunded
    _customer(store, "c1", "ann@example.com", "Annie", 1)  # renamed
    _agree(store, snap)
    assert snap.stats["keys_kept"] and snap.stats["changed_rows"] == 2
    _customer(store, "c2", "guest@example.com", "Gus", 1)  # the guest registers: no order changes
    result = _agree(store, snap)
    assert not snap.stats["keys_kept"] and list(result["buyers"]) == ["c1", "c2"]
    _put(store, "o2", None, "other@example.com", 5, "20.00")  # the order's email is corrected
    result = _agree(store, snap)
    assert not snap.stats["keys_kept"] and list(result["buyers"]) == ["c1", "other@example.com"]
    store.dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_worker_on_postgresql_starts_from_its_own_cache_file(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server database has no file to sit beside: the cache lives under var/snapshot, named by a hash
    of the database's URL, owner-only; a new process starts from it instead of reading every order."""
    from worker.store import snapshot as snapshot_module

    monkeypatch.setattr(snapshot_module, "SERVER_CACHE_DIR", tmp_path / "var" / "snapshot")
    monkeypatch.setattr(snapshot_module, "_SNAPSHOTS", {})
    store = open_store(database_url)
    _put(store, "o1", "c1", "ann@example.com", 10, "100.00")
    _put(store, "o2", None, "bob@example.com", 100, "5.00")
    _agree(store, snapshot_module.snapshot_for(store))
    path = snapshot_module.default_cache_path(store.engine.url.render_as_string(hide_password=True))
    assert path is not None and path.parent == tmp_path / "var" / "snapshot" and path.exists()
    assert "postgres" not in path.name and (path.stat().st_mode & 0o777) == 0o600
    _put(store, "o3", "c2", "cat@example.com", 1, "3.00")
    monkeypatch.setattr(snapshot_module, "_SNAPSHOTS", {})  # a new worker process
    fresh = snapshot_module.snapshot_for(store)
    _agree(store, fresh)
    assert not fresh.stats["full"] and fresh.stats["changed_rows"] == 1
    store.dispose()
