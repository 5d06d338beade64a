"""The columnar fast path (snapshot facts) and the frame path give identical tables and memberships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.segments import NOW, facts_of, generate, load_store
from worker.segments import build_customer_table, compute_segments, table_from_facts
from worker.store import open_store
from worker.store.snapshot import Snapshot


def _same(left: dict[str, pd.Index], right: dict[str, pd.Index]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert list(left[name]) == list(right[name]), name


def test_generated_facts_store_snapshot_and_frames_agree(tmp_path: Path) -> None:
    data = generate(1_000, 8_000, seed=5, line_share=0.2)
    url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    load_store(url, data)
    store = open_store(url)
    direct = table_from_facts(facts_of(data))
    snapshot = table_from_facts(Snapshot(store).refresh())
    frames = build_customer_table(store.orders_frame(), store.customers_frame(), store.lines_frame())
    store.dispose()
    expected = compute_segments(frames, NOW)
    assert sum(len(v) for v in expected.values()) > 1_000
    _same(compute_segments(direct, NOW), expected)
    _same(compute_segments(snapshot, NOW), expected)
    columns = ["email", "email_consent", "order_count", "revenue", "first_order_at", "first_channel"]
    pd.testing.assert_frame_equal(snapshot.frame[columns], frames.frame[columns])
    assert np.array_equal(snapshot.purchases["customer_key"], frames.purchases["customer_key"])
