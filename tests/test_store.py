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
