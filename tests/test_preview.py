"""The segment preview: sizes, change since the last recompute, revenue share, overlap, warnings."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from connectors.kernel.records import Consent, CustomerRecord, OrderRecord
from tests.conftest import make_settings
from worker.config import AppConfig, parse_config
from worker.cycle import recompute
from worker.ingest import validate_customers, validate_orders
from worker.preview import (
    GOOGLE,
    META,
    TIKTOK,
    Baseline,
    SegmentPreview,
    Target,
    build_preview,
    findings,
    jaccard_matrix,
    preview_store,
    render_preview,
)
from worker.segments import SegmentsConfig, build_customer_table, compute_segments, empty_customers
from worker.store import Store, open_store

NOW = datetime(2026, 3, 31, 12, tzinfo=UTC)


def _segment(name: str, size: int, targets: tuple[Target, ...] = ()) -> SegmentPreview:
    return SegmentPreview(name, "", size, None, None, None, 0.0, None, (), targets)


def test_jaccard_is_intersection_over_union() -> None:
    index = pd.Index([f"c{i}" for i in range(10)])
    a = pd.Index(["c0", "c1", "c2", "c3"])
    b = pd.Index(["c2", "c3", "c4"])
    empty = pd.Index([], dtype=object)
    matrix = jaccard_matrix(index, [a, b, empty, a])
    assert matrix[0, 1] == matrix[1, 0] == pytest.approx(2 / 5)
    assert matrix[0, 3] == 1.0 and matrix[0, 0] == 1.0
    assert (matrix[2] == 0).all() and (matrix[:, 2] == 0).all()  # an empty segment overlaps nothing


def test_warnings_empty_near_duplicate_and_too_small() -> None:
    segments = [
        _segment("gone", 0, (Target("gone-meta", "meta_ads", "ads", 0, (META,)),)),
        _segment("a", 100),
        _segment("b", 100),
        _segment("c", 100),
        _segment("tiny", 42),
        _segment("meta_small", 150, (Target("m", "meta_ads", "ads", 99, (META,)),)),
        _segment("meta_ok", 150, (Target("m2", "meta_ads", "ads", 100, (META,)),)),
        _segment("file_ads", 800, (Target("f", "files", "ads", 500, (META, GOOGLE, TIKTOK)),)),
        _segment("newsletter", 12, (Target("n", "mailchimp", "email", 12),)),
    ]
    jaccard = np.eye(len(segments))
    jaccard[1, 2] = jaccard[2, 1] = 0.91
    jaccard[1, 3] = jaccard[3, 1] = 0.9  # exactly 90%: not "more than"
    found = findings(segments, jaccard)
    by_kind: dict[str, list[tuple[str, ...]]] = {}
    for f in found:
        by_kind.setdefault(f.kind, []).append(f.segments)
    assert by_kind["empty"] == [("gone",)]
    assert by_kind["near_duplicate"] == [("a", "b")]
    # email lists have no platform minimum; an unmapped segment below 100 is too small for any platform
    assert by_kind["too_small"] == [("tiny",), ("meta_small",), ("file_ads",)]
    text = {f.segments[0]: f.message for f in found if f.kind == "too_small"}
    assert "gone-meta" in next(f.message for f in found if f.kind == "empty")
    assert "(Meta): 99 eligible members; Meta needs ≥ 100 matched members" in text["meta_small"]
    assert "Google" not in text["meta_small"] and "TikTok" not in text["meta_small"]
    assert "(ad audience): 500 eligible members; TikTok needs ≥ 1,000" in text["file_ads"]
    assert "Meta" not in text["file_ads"]
    assert "Meta and Google need ≥ 100, TikTok needs ≥ 1,000" in text["tiny"]


def _orders(*rows: tuple[str, str, float, int]) -> pd.DataFrame:
    """(order_id, customer_id, total, age in days) rows as an engine orders frame."""
    data = pd.DataFrame(
        {
            "order_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "email": [f"{r[1]}@example.com" for r in rows],
            "created_at": [NOW - timedelta(days=r[3]) for r in rows],
            "total": [r[2] for r in rows],
            "currency": "USD",
            "cancelled": False,
            "test": False,
            "has_discount": False,
            "channel": None,
        }
    )
    data["created_at"] = pd.to_datetime(data["created_at"], utc=True)
    for column in ("order_id", "customer_id", "email", "channel"):
        data[column] = data[column].astype(object)
    return data


def test_build_preview_against_the_last_run() -> None:
    table = build_customer_table(
        _orders(
            ("o1", "ann", 300.0, 5),
            ("o2", "bob", 100.0, 10),
            ("o3", "cat", 60.0, 200),
            ("o4", "dan", 40.0, 400),
        ),
        empty_customers(),
    )
    config = SegmentsConfig.model_validate(
        {
            "use_defaults": False,
            "definitions": {"big": {"revenue": {"min": 100}}, "recent": {"last_order_days": {"max": 29}}},
        }
    )
    members = compute_segments(table, NOW, config)
    assert list(members["big"]) == ["ann", "bob"]
    baseline = Baseline(
        run_id=7,
        finished_at=NOW - timedelta(days=1),
        sizes={"big": 3, "retired": 2},
        members={"big": frozenset({"bob", "cat", "eve"}), "retired": frozenset({"x", "y"})},
    )
    preview = build_preview(table, members, config.resolved(), NOW, baseline=baseline, recent_days=30)
    big, recent = preview.segments
    assert (big.size, big.previous_size, big.change, big.joined, big.left) == (2, 3, -1, 1, 2)
    assert (recent.previous_size, recent.change, recent.joined) == (None, None, None)  # new since the run
    assert big.revenue_share == pytest.approx(400 / 500)
    assert big.recent_revenue_share == pytest.approx(400 / 400)  # only ann and bob ordered in 30 days
    assert big.sample == ("a***@example.com", "b***@example.com")
    assert preview.dropped == ("retired",)
    assert preview.jaccard[0, 1] == pytest.approx(1.0)  # both are {ann, bob}
    assert [w.kind for w in preview.warnings] == ["near_duplicate", "too_small", "too_small"]

    data = json.loads(json.dumps(preview.to_dict()))
    assert data["overlap"] == {"segments": ["big", "recent"], "jaccard": [[1.0, 1.0], [1.0, 1.0]]}
    assert data["last_recompute"]["run_id"] == 7
    assert data["segments"][0]["change"] == -1 and data["segments"][1]["change"] is None
    assert "@example.com" not in json.dumps(data).replace("***@example.com", "")

    text = render_preview(preview)
    assert "1.00  big ~ recent" in text and "new" in text and "retired" in text
    assert "overlap matrix" not in text
    assert "overlap matrix" in render_preview(preview, matrix=True)


def test_matrix_flag_shows_pairs_below_the_cli_threshold() -> None:
    table = build_customer_table(
        _orders(("o1", "a", 10.0, 1), ("o2", "b", 10.0, 1), ("o3", "c", 10.0, 100)), empty_customers()
    )
    members = {"x": pd.Index(["a", "b"]), "y": pd.Index(["b", "c"])}  # Jaccard 1/3
    definitions = SegmentsConfig().resolved()
    preview = build_preview(table, members, definitions, NOW)
    assert preview.pairs() == []
    assert "x ~ y" not in render_preview(preview)
    matrix = render_preview(preview, matrix=True).splitlines()
    assert any(line.startswith(" 1. x") and line.split()[-2:] == ["100", "33"] for line in matrix)


# -- from a store, after a real recompute -------------------------------------------------------------


def _fill(store: Store) -> None:
    people = [
        CustomerRecord(f"c{i}", "test", f"person{i}@example.com", NOW, Consent.SUBSCRIBED if i % 2 else Consent.UNKNOWN)
        for i in range(6)
    ]
    orders = [
        OrderRecord(
            order_id=f"o{i}",
            source="test",
            customer_id=f"c{i}",
            email=None,
            created_at=NOW - timedelta(days=10 * i),
            updated_at=NOW,
            total=Decimal(40 * i),
            currency="USD",
        )
        for i in range(6)
    ]
    customers = validate_customers(people)
    checked = validate_orders(orders)
    store.upsert_customers(customers.customers)
    store.upsert_orders(checked.orders, checked.lines)


def _config(tmp_path: Path, definitions: dict[str, Any], audience_kind: str = "email") -> AppConfig:
    data = {
        "source": {"type": "shopify", "shop_url": "sandbox"},
        "segments": {"use_defaults": False, "definitions": definitions},
        "destinations": {
            "out": {"type": "file", "directory": str(tmp_path), "identifier": "email", "audience_kind": audience_kind}
        },
        "mappings": [{"name": "big-out", "segment": "big", "destination": "out", "audience": "big"}],
    }
    return parse_config(data, tmp_path / "config.toml")


def test_preview_of_an_edited_config_changes_nothing_in_the_store(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url)
    try:
        _fill(store)  # revenue 0, 40, ..., 200 for c0..c5
        before = _config(tmp_path, {"big": {"revenue": {"min": 120}}, "old": {"order_count": {"min": 1}}})
        run = recompute(store, before, NOW)
        assert run.sizes == {"big": 3, "old": 6}
        runs = len(store.recent_runs())

        edited = _config(tmp_path, {"big": {"revenue": {"min": 80}}, "fresh": {"last_order_days": {"max": 15}}})
        settings = make_settings(database_url=database_url)
        preview = preview_store(store, edited, settings, NOW)
        big, fresh = preview.segments
        assert (big.size, big.previous_size, big.change, big.joined, big.left) == (4, 3, 1, 1, 0)
        assert (fresh.size, fresh.previous_size) == (2, None)
        assert preview.dropped == ("old",)
        assert preview.baseline is not None and preview.baseline.run_id == run.run_id
        (target,) = big.targets
        assert (target.mapping, target.audience_kind, target.eligible) == ("big-out", "email", 2)  # c3, c5

        # a preview is read-only: no run row, the stored membership is the last run's
        assert len(store.recent_runs()) == runs
        assert store.segment_keys("big") == {"c3", "c4", "c5"}
        assert store.segment_keys("old") == {f"c{i}" for i in range(6)}

        ads = preview_store(store, _config(tmp_path, {"big": {"revenue": {"min": 80}}}, "ads"), settings, NOW)
        (ad_target,) = ads.segments[0].targets
        assert ad_target.eligible == 4 and ad_target.platforms == (META, GOOGLE, TIKTOK)
        (warning,) = [w for w in ads.warnings if w.kind == "too_small"]
        assert "big → big-out (ad audience): 4 eligible members" in warning.message
    finally:
        store.dispose()


def test_preview_before_any_run(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    try:
        _fill(store)
        config = _config(tmp_path, {"big": {"revenue": {"min": 120}}})
        preview = preview_store(store, config, make_settings(database_url=sqlite_url), NOW)
        assert preview.baseline is None and preview.segments[0].previous_size is None
        assert "no recompute run in the store yet" in render_preview(preview)
    finally:
        store.dispose()


def test_every_segments_example_in_the_docs_is_a_valid_definition() -> None:
    text = (Path(__file__).parent.parent / "docs" / "segments.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
    examples = [tomllib.loads(b) for b in blocks if "[segments." in b]
    assert len(examples) >= 5
    for example in examples:
        config = SegmentsConfig.model_validate(example["segments"])
        assert set(example["segments"]["definitions"]) <= set(config.resolved())


def test_preview_eligible_equals_what_the_next_sync_leaves_acknowledged_for_every_sandbox_mapping(
    sqlite_url: str, tmp_path: Path
) -> None:
    """One eligibility rule: preview, dry run and sync agree (a guest without an email, say)."""
    from connectors.shopify.synthetic import SyntheticStore
    from tests.test_cycle_e2e import _sandbox_config
    from worker.cycle import pull, sync_mapping
    from worker.factory import make_runtime
    from worker.preview import preview_store
    from worker.sandbox import Sandbox

    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    shop = SyntheticStore(seed=8, customers=300, now=now)
    with Sandbox(now, store=shop) as sandbox:
        config, settings = sandbox.resolve(_sandbox_config(tmp_path), make_settings(database_url=sqlite_url))
        store = open_store(sqlite_url)
        runtime = make_runtime(settings)
        pull(store, config, settings, runtime, now=now)
        recompute(store, config, now)
        shown = {
            t.mapping: (t.eligible, s.size)
            for s in preview_store(store, config, settings, now).segments
            for t in s.targets
        }
        assert set(shown) == set(config.mappings)
        assert any(eligible < size for eligible, size in shown.values())  # some members are not eligible
        for name in config.mappings:
            result = sync_mapping(store, config, settings, runtime, name, now=now)
            assert result.rejected == 0
            assert shown[name][0] == result.eligible == len(store.acknowledged(name)), name
        store.dispose()
