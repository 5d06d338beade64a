from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine

from connectors.kernel.records import OrderRecord
from worker.ingest import validate_orders
from worker.store import open_store
from worker.store.migrations import LATEST, migrate


def _order(order_id: str, total: str, updated: datetime) -> OrderRecord:
    from decimal import Decimal

    return OrderRecord(
        order_id=order_id,
        source="test",
        customer_id="cust-1",
        email="A@Example.com ",
        created_at=updated,
        updated_at=updated,
        total=Decimal(total),
        currency="usd",
    )


def test_schema_is_created_and_upgrades_are_idempotent(database_url: str) -> None:
    store = open_store(database_url)
    store.dispose()
    engine = create_engine(database_url)
    assert migrate(engine) == LATEST  # second start finds the latest version and changes nothing
    engine.dispose()


def test_orders_are_upserted_by_id_and_normalized(database_url: str) -> None:
    store = open_store(database_url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = validate_orders([_order("o1", "10.00", t0)])
    store.upsert_orders(first.orders, first.lines)
    refunded = validate_orders([_order("o1", "0.00", t0 + timedelta(days=1))])
    store.upsert_orders(refunded.orders, refunded.lines)
    frame = store.orders_frame()
    assert len(frame) == 1
    assert frame.loc[0, "total"] == 0.0
    assert frame.loc[0, "email"] == "a@example.com"
    assert frame.loc[0, "currency"] == "USD"
    store.dispose()


def test_an_older_version_never_overwrites_a_newer_one(database_url: str) -> None:
    """A late webhook or an overlap re-read of an older version leaves the newer order and its lines."""
    from dataclasses import replace

    from connectors.kernel.records import LineItem

    store = open_store(database_url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    newer = validate_orders([replace(_order("o1", "0.00", t0 + timedelta(hours=2)), lines=(LineItem("p2", "B", 1),))])
    older = validate_orders(
        [replace(_order("o1", "25.00", t0), lines=(LineItem("p1", "A", 4), LineItem("p3", "C", 1)))]
    )
    assert store.upsert_orders(newer.orders, newer.lines) == 1
    assert store.upsert_orders(older.orders, older.lines) == 0
    assert store.orders_frame().loc[0, "total"] == 0.0
    assert store.lines_frame()["product_id"].tolist() == ["p2"]
    same = validate_orders([replace(_order("o1", "1.00", t0 + timedelta(hours=2)), lines=())])
    assert store.upsert_orders(same.orders, same.lines) == 1  # the same version again is rewritten
    assert store.orders_frame().loc[0, "total"] == 1.0 and store.lines_frame().empty
    store.dispose()


def test_watermarks_and_runs_round_trip(database_url: str) -> None:
    store = open_store(database_url)
    assert store.get_watermark("shopify", "orders") is None
    mark = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    store.set_watermark("shopify", "orders", mark)
    store.set_watermark("shopify", "orders", mark + timedelta(hours=1))
    assert store.get_watermark("shopify", "orders") == mark + timedelta(hours=1)
    run_id = store.start_run("sync", "m1")
    store.finish_run(run_id, "partial", {"added": 3, "rejected": 1}, "1 member rejected")
    (last,) = [r for r in store.last_runs() if r.mapping == "m1"]
    assert (last.status, last.counts["added"], last.error) == ("partial", 3, "1 member rejected")
    assert last.finished_at is not None and last.finished_at.tzinfo is not None
    store.dispose()
