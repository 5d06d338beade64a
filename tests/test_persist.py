"""Recompute results are written as changes only, and the stored tables always equal a full rewrite."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import select

from bench.segments import NOW, generate, load_store
from worker import cycle
from worker.segments import compute_segments, segment_masks, table_from_facts
from worker.segments.table import CustomerTable
from worker.store import Store, open_store, persist, schema
from worker.store.persist import Written
from worker.store.snapshot import Snapshot

KEYS = ("email", "phone", "first_name", "last_name", "country", "email_consent")


def _stored(store: Store) -> tuple[dict[str, tuple[Any, ...]], dict[str, set[str]]]:
    p = schema.profiles.c
    m = schema.segment_members.c
    with store.engine.connect() as conn:
        profiles = {r[0]: tuple(r[1:]) for r in conn.execute(select(p.customer_key, *[p[k] for k in KEYS]))}
        members: dict[str, set[str]] = {}
        for segment, key in conn.execute(select(m.segment, m.customer_key)):
            members.setdefault(segment, set()).add(key)
    return profiles, members


def _expected(table: CustomerTable, when: Any = NOW) -> tuple[dict[str, tuple[Any, ...]], dict[str, set[str]]]:
    rows = cycle.profile_rows(table.frame)
    profiles = {r["customer_key"]: tuple(r[k] for k in KEYS) for r in rows}
    members = {name: set(index) for name, index in compute_segments(table, when).items() if len(index)}
    return profiles, members


def _step(
    store: Store, snap: Snapshot, written: Written | None, *, when: Any = NOW
) -> tuple[dict[str, dict[str, int]], Written]:
    before = _stored(store)[1]
    table = table_from_facts(snap.refresh())
    changes, kept = persist.persist(store, table, segment_masks(table, when), written)
    profiles, members = _expected(table, when)
    assert _stored(store) == (profiles, members)
    for name, change in changes.items():
        new, old = members.get(name, set()), before.get(name, set())
        assert change == {"size": len(new), "joined": len(new - old), "left": len(old - new)}, name
    return changes, kept


def _customer(cid: str, email: str, consent: str = "SUBSCRIBED", first: str = "Zoe") -> dict[str, Any]:
    return {
        "customer_id": cid,
        "source": "test",
        "email": email,
        "first_name": first,
        "email_consent": consent,
        "updated_at": NOW,
    }


def _order(oid: str, cid: str | None, email: str, days: int, total: float) -> dict[str, Any]:
    when = NOW - timedelta(days=days)
    return {
        "order_id": oid,
        "source": "test",
        "customer_id": cid,
        "email": email,
        "created_at": when,
        "updated_at": when,
        "total": total,
        "currency": "USD",
        "cancelled": False,
        "test": False,
        "has_discount": False,
    }


def test_changes_only_warm_cold_and_foreign_writes(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = database_url
    load_store(url, generate(800, 6_000, seed=3, line_share=0.1))
    store = open_store(url)
    snap = Snapshot(store)
    changes, kept = _step(store, snap, None)  # cold, empty tables: everything joins
    assert all(c["joined"] == c["size"] and c["left"] == 0 for c in changes.values())

    # nothing changed: the warm path writes nothing and never reads the tables
    cold = persist._cold
    monkeypatch.setattr(persist, "_cold", lambda *a: pytest.fail("warm state not used"))
    changes, kept = _step(store, snap, kept)
    assert all(c["joined"] == c["left"] == 0 for c in changes.values())

    # a guest becomes a customer (its email key vanishes), consent and a name change, new buyers
    guest = "guest0@example.net"
    store.upsert_customers([_customer("new-1", guest), _customer("7000000001", "user1@example.com", "UNSUBSCRIBED")])
    store.upsert_customers([_customer("7000000002", "user2@example.com", first="Renamed")])
    store.upsert_orders([_order("n1", None, "fresh@example.org", 1, 500.0), _order("n2", "new-1", guest, 3, 9.0)], [])
    changes, kept = _step(store, snap, kept)
    assert sum(c["joined"] + c["left"] for c in changes.values()) > 0
    # time moves on: windows slide with no new data
    changes, kept = _step(store, snap, kept, when=NOW + timedelta(days=40))

    # another writer touched the tables: the kept state is not trusted, the tables are read
    monkeypatch.setattr(persist, "_cold", cold)
    store.replace_segments({"foreign": ["x"]})
    calls: list[int] = []
    monkeypatch.setattr(persist, "_cold", lambda *a: calls.append(1) or cold(*a))
    changes, kept = _step(store, snap, kept)
    assert calls and "foreign" not in _stored(store)[1]

    # a new process (no kept state) with stale tables: read once, then only the differences
    store.upsert_orders([_order("n3", "7000000003", "user3@example.com", 0, 2000.0)], [])
    changes, kept = _step(store, Snapshot(store), None)
    assert len(calls) == 2

    # erasure deletes rows and reloads the snapshot (new dictionary): cold again, still exact
    store.request_erasure("user4@example.com", mappings=[], origin="test")
    changes, kept = _step(store, snap, kept)
    assert len(calls) == 3
    store.dispose()


def test_recompute_keeps_state_per_process(tmp_path: Path) -> None:
    from worker.config import AppConfig
    from worker.segments import SegmentsConfig
    from worker.store.snapshot import snapshot_for

    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    load_store(url, generate(300, 2_000, seed=4))
    store = open_store(url)
    config = cast(AppConfig, SimpleNamespace(segments=SegmentsConfig()))
    first = cycle.recompute(store, config, NOW)
    assert snapshot_for(store).written is not None
    second = cycle.recompute(store, config, NOW)
    assert second.sizes == first.sizes
    assert all(c["joined"] == c["left"] == 0 for c in second.changes.values())
    table = table_from_facts(snapshot_for(store).refresh())
    assert _stored(store) == _expected(table)
    store.dispose()
