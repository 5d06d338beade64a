"""Exact membership of the shipped segments on hand-built edge cases."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from tests.test_segments_helpers import NOW, ago, customers, lines, orders
from worker.segments import (
    FrameSchemaError,
    SegmentsConfig,
    build_customer_table,
    compute_segments,
    rfm_scores,
    segment_revenue_share,
)


def members(result: dict[str, pd.Index], name: str) -> set[str]:
    return set(result[name])


def run(order_frame: pd.DataFrame, customer_frame: pd.DataFrame | None = None, **kw: object):
    table = build_customer_table(order_frame, customer_frame if customer_frame is not None else customers())
    config = SegmentsConfig.model_validate(kw) if kw else None
    return table, compute_segments(table, NOW, config)


def test_recency_day_boundaries() -> None:
    ages = [0, 29, 30, 31, 59, 60, 180, 181, 400]
    frame = orders(*({"customer_id": f"d{age}", "created_at": ago(age, hour=23)} for age in ages))
    _, result = run(frame)
    assert members(result, "engaged_30d") == {"d0", "d29"}
    assert members(result, "lapsed_60_180") == {"d60", "d180"}
    assert members(result, "lapsed_180_plus") == {"d181", "d400"}
    assert members(result, "buyers") == {f"d{age}" for age in ages}


def test_day_is_the_utc_calendar_day_not_24_hours() -> None:
    # 29 days and ~12.5 hours before NOW, but on the UTC day 29 days back: engaged
    late = orders({"customer_id": "late", "created_at": ago(29, hour=0)})
    _, result = run(late)
    assert members(result, "engaged_30d") == {"late"}
    # offset input: 2026-03-01T23:30-05:00 is 2026-03-02 UTC, age 29 at NOW (2026-03-31)
    shifted = orders({"customer_id": "tz", "created_at": "2026-03-01T23:30:00-05:00"})
    table, result = run(shifted)
    assert table.frame.loc["tz", "last_order_at"] == pd.Timestamp("2026-03-02T04:30:00Z")
    assert members(result, "engaged_30d") == {"tz"}


def test_email_engagement_makes_engaged_and_not_lapsed() -> None:
    frame = orders({"customer_id": "c1", "created_at": ago(90)}, {"customer_id": "c2", "created_at": ago(90)})
    people = customers(
        {"customer_id": "c1", "last_engaged_at": ago(3)},
        {"customer_id": "c2", "last_engaged_at": ago(30)},
        {"customer_id": "c3", "last_engaged_at": ago(0)},  # no orders, opened an email today
    )
    _, result = run(frame, people)
    assert members(result, "engaged_30d") == {"c1", "c3"}
    assert members(result, "lapsed_60_180") == {"c2"}
    assert members(result, "buyers") == {"c1", "c2"}


def test_cancelled_and_test_orders_do_not_count() -> None:
    frame = orders(
        {"customer_id": "cancel", "created_at": ago(1), "cancelled": True},
        {"customer_id": "tester", "created_at": ago(1), "test": True},
        {"customer_id": "mixed", "created_at": ago(1), "cancelled": True, "total": 99.0},
        {"customer_id": "mixed", "created_at": ago(100), "total": 5.0},
    )
    table, result = run(frame)
    assert members(result, "buyers") == {"mixed"}
    assert "tester" not in table.frame.index  # test orders make no customer
    row = table.frame.loc["cancel"]
    assert row["order_count"] == 0 and row["revenue"] == 0 and pd.isna(row["last_order_at"])
    mixed = table.frame.loc["mixed"]
    assert mixed["order_count"] == 1 and mixed["revenue"] == 5.0
    assert mixed["last_order_at"] == pd.Timestamp(ago(100))
    assert members(result, "lapsed_60_180") == {"mixed"}
    assert members(result, "engaged_30d") == set()


def test_guest_orders_merge_into_the_customer_with_that_email() -> None:
    frame = orders(
        {"customer_id": "c1", "email": "ann@example.com", "created_at": ago(200), "total": 30.0},
        {"email": "ann@example.com", "created_at": ago(10), "total": 20.0},  # guest, same person
        {"email": "bob@example.com", "created_at": ago(70), "total": 5.0},  # guest only
        {"email": "cat@example.com", "created_at": ago(5)},  # guest of a store customer
        {"created_at": ago(5)},  # neither id nor email: excluded
    )
    people = customers({"customer_id": "c9", "email": "cat@example.com", "email_consent": "SUBSCRIBED"})
    table, result = run(frame, people)
    assert list(table.frame.index) == ["bob@example.com", "c1", "c9"]
    ann = table.frame.loc["c1"]
    assert ann["order_count"] == 2 and ann["revenue"] == 50.0 and ann["email"] == "ann@example.com"
    assert ann["mean_gap_days"] == 190.0
    assert table.frame.loc["c9", "order_count"] == 1
    assert pd.isna(table.frame.loc["bob@example.com", "customer_id"])
    assert members(result, "engaged_30d") == {"c1", "c9"}
    assert members(result, "lapsed_60_180") == {"bob@example.com"}
    assert members(result, "newsletter_subscribers") == {"c9"}


def test_refund_to_zero_is_a_counted_order_with_no_revenue() -> None:
    frame = orders(
        {"customer_id": "r", "created_at": ago(40), "total": 0.0},
        {"customer_id": "r", "created_at": ago(20), "total": 0.0},
    )
    table, result = run(frame)
    assert table.frame.loc["r", "order_count"] == 2 and table.frame.loc["r", "revenue"] == 0.0
    assert members(result, "buyers") == {"r"}
    assert members(result, "lifecycle_repeat") == {"r"}
    assert members(result, "whales") == set()  # no revenue, no whales


def test_consent_from_latest_order_for_keys_without_a_customer_row() -> None:
    frame = orders(
        {"email": "yes@x.io", "created_at": ago(9), "accepts_marketing": True},
        {"email": "yes@x.io", "created_at": ago(20), "accepts_marketing": False},
        {"email": "no@x.io", "created_at": ago(20), "accepts_marketing": True},
        {"email": "no@x.io", "created_at": ago(2), "accepts_marketing": False},
        {"email": "unk@x.io", "created_at": ago(2), "accepts_marketing": None},
    )
    table, result = run(frame)
    assert members(result, "newsletter_subscribers") == {"yes@x.io"}
    assert table.frame.loc["no@x.io", "email_consent"] == "UNKNOWN"


def test_customers_without_orders_appear() -> None:
    people = customers(
        {"customer_id": "s", "email": "s@x.io", "email_consent": "SUBSCRIBED"},
        {"customer_id": "u", "email": "u@x.io", "email_consent": "UNSUBSCRIBED"},
    )
    table, result = run(orders(), people)
    assert list(table.frame.index) == ["s", "u"]
    assert members(result, "newsletter_subscribers") == {"s"}
    assert members(result, "buyers") == set()


def test_lifecycle_and_discount_and_channel() -> None:
    frame = orders(
        {"customer_id": "new", "created_at": ago(3), "has_discount": True, "channel": "google / cpc"},
        {"customer_id": "act", "created_at": ago(400), "channel": "Newsletter / email"},
        {"customer_id": "act", "created_at": ago(89), "has_discount": True},
        {"customer_id": "act", "created_at": ago(50)},
        {"customer_id": "risk", "created_at": ago(90), "has_discount": True},
        {"customer_id": "risk", "created_at": ago(91)},
        {"customer_id": "dorm", "created_at": ago(365)},
    )
    defs = {
        "paid_search": {"first_channel": {"contains": "CPC"}},
        "from_email": {"first_channel": {"in": ["newsletter / email"]}},
    }
    _, result = run(frame, definitions=defs)
    assert members(result, "lifecycle_new") == {"new"}
    assert members(result, "lifecycle_active") == {"act"}
    assert members(result, "lifecycle_at_risk") == {"risk"}
    assert members(result, "lifecycle_dormant") == {"dorm"}
    assert members(result, "lifecycle_repeat") == {"act", "risk"}
    assert members(result, "lifecycle_loyal") == {"act"}
    assert members(result, "deal_seekers") == {"new", "risk"}
    assert members(result, "paid_search") == {"new"}
    assert members(result, "from_email") == {"act"}


def test_winback_uses_own_gap_then_store_median() -> None:
    frame = orders(
        # gap 10 days, last order 16 days ago: 16 > 1.5 * 10
        {"customer_id": "due", "created_at": ago(36)},
        {"customer_id": "due", "created_at": ago(26)},
        {"customer_id": "due", "created_at": ago(16)},
        # gap 10 days, last order 15 days ago: not yet
        {"customer_id": "early", "created_at": ago(25)},
        {"customer_id": "early", "created_at": ago(15)},
        # gap 40: median of (10, 10, 40) = 10 for single-order customers
        {"customer_id": "slow", "created_at": ago(50)},
        {"customer_id": "slow", "created_at": ago(10)},
        {"customer_id": "single_due", "created_at": ago(16)},
        {"customer_id": "single_ok", "created_at": ago(15)},
    )
    _, result = run(frame)
    assert members(result, "winback_due") == {"due", "single_due"}


def test_product_segment_declared_by_user() -> None:
    frame = orders(
        {"customer_id": "a", "created_at": ago(10)},
        {"customer_id": "b", "created_at": ago(100)},
        {"customer_id": "c", "created_at": ago(10), "cancelled": True},
        {"customer_id": "d", "created_at": ago(10)},
    )
    items = lines(
        ("o0", "8123", "BRIDGE-1", 1),
        ("o1", "8123", None, 2),
        ("o2", "8123", None, 1),
        ("o3", None, "MUG", 1),
    )
    table = build_customer_table(frame, customers(), items)
    config = SegmentsConfig.model_validate(
        {
            "definitions": {
                "bought_bridge_product": {"bought": {"product_ids": ["8123"]}},
                "bridge_recent": {"bought": {"product_ids": ["8123"], "within_days": 30}},
                "mug_or_bridge_sku": {"bought": {"skus": ["MUG", "BRIDGE-1"]}},
            }
        }
    )
    result = compute_segments(table, NOW, config)
    assert members(result, "bought_bridge_product") == {"a", "b"}  # c's order was cancelled
    assert members(result, "bridge_recent") == {"a"}
    assert members(result, "mug_or_bridge_sku") == {"a", "d"}


def test_whales_pareto_and_top_percent() -> None:
    totals = {"a": 50.0, "b": 30.0, "c": 10.0, "d": 5.0, "e": 5.0, "old": 1000.0}
    frame = orders(
        *({"customer_id": k, "created_at": ago(400 if k == "old" else 10), "total": v} for k, v in totals.items())
    )
    table, result = run(frame)
    # window 365 days: a+b = 80 of 100
    assert members(result, "whales") == {"a", "b"}
    assert members(result, "whales_top") == {"a"}  # ceil(20% of 5) = 1
    share = segment_revenue_share(table, result["whales"], NOW, within_days=365)
    assert share == pytest.approx(0.8)
    assert segment_revenue_share(table, result["whales"]) == pytest.approx(80 / 1100)
    _, all_time = run(frame, windows={"whales_window_days": 0})
    assert members(all_time, "whales") == {"old"}


def test_rfm_scores_match_a_straightforward_quintile_computation() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(137):
        for _ in range(int(rng.integers(1, 5))):
            rows.append(
                {
                    "customer_id": f"k{i:03d}",
                    "created_at": ago(int(rng.integers(0, 60))),
                    "total": float(rng.integers(0, 5)) * 10,
                }
            )
    rows.append({"customer_id": "none", "created_at": ago(1), "cancelled": True})
    table = build_customer_table(orders(*rows), customers())
    scores = rfm_scores(table)
    frame = table.frame[table.frame["order_count"] > 0]
    n = len(frame)

    def expected(values: dict[str, object]) -> dict[str, int]:
        ranked = sorted(values, key=lambda key: (values[key], key))
        return {key: -(-(position + 1) * 5 // n) for position, key in enumerate(ranked)}

    last = expected(dict(zip(frame.index, frame["last_order_at"], strict=True)))
    count = expected(dict(zip(frame.index, frame["order_count"], strict=True)))
    money = expected(dict(zip(frame.index, frame["revenue"], strict=True)))
    assert "none" not in scores.index and len(scores) == n == 137
    assert scores["r"].to_dict() == last
    assert scores["f"].to_dict() == count
    assert scores["m"].to_dict() == money
    for column in ("r", "f", "m"):
        sizes = scores[column].value_counts().sort_index().tolist()
        assert sizes == [27, 27, 28, 27, 28]
    result = compute_segments(table, NOW)
    champions = set(scores.index[(scores["r"] == 5) & (scores["f"] >= 4)])
    assert members(result, "rfm_champions") == champions
    groups = [f"rfm_{g}" for g in scores["group"].unique()]
    union = set().union(*(members(result, g) for g in groups))
    assert union == set(scores.index)
    assert sum(len(result[g]) for g in groups) == n  # the groups partition the buyers


def test_user_definitions_override_and_reference_defaults() -> None:
    frame = orders({"customer_id": "a", "created_at": ago(40)}, {"customer_id": "b", "created_at": ago(10)})
    _, result = run(
        frame,
        definitions={
            "engaged_30d": {"last_order_days": {"max": 44}},
            "quiet": {"all": [{"segment": "buyers"}, {"not": {"segment": "engaged_30d"}}]},
        },
    )
    assert members(result, "engaged_30d") == {"a", "b"}
    assert members(result, "quiet") == set()
    config = SegmentsConfig.model_validate({"use_defaults": False, "definitions": {"x": {"order_count": {"min": 1}}}})
    table = build_customer_table(frame, customers())
    assert list(compute_segments(table, NOW, config)) == ["x"]


def test_rfm_score_ranges_and_revenue_condition() -> None:
    frame = orders(*({"customer_id": f"c{i}", "created_at": ago(i), "total": float(i)} for i in range(10)))
    _, result = run(
        frame,
        definitions={"recent_top": {"rfm": {"r": {"min": 5}}}, "big": {"revenue": {"min": 8}}},
    )
    assert members(result, "recent_top") == {"c0", "c1"}
    assert members(result, "big") == {"c8", "c9"}


def test_naive_now_is_utc_and_results_are_sorted_indexes() -> None:
    frame = orders({"customer_id": "b", "created_at": ago(1)}, {"customer_id": "a", "created_at": ago(1)})
    table = build_customer_table(frame, customers())
    naive = compute_segments(table, NOW.replace(tzinfo=None))
    assert list(naive["buyers"]) == ["a", "b"]
    assert naive["engaged_30d"].equals(compute_segments(table, NOW)["engaged_30d"])
    assert compute_segments(table, datetime(2026, 3, 31, 23, 59, tzinfo=UTC))["engaged_30d"].equals(
        naive["engaged_30d"]
    )


def test_schema_errors_name_the_column() -> None:
    bad = orders({"customer_id": "a", "created_at": ago(1)}).drop(columns=["currency"])
    with pytest.raises(FrameSchemaError, match="currency"):
        build_customer_table(bad, customers())
    naive = orders({"customer_id": "a", "created_at": ago(1)})
    naive["created_at"] = naive["created_at"].dt.tz_localize(None)
    with pytest.raises(FrameSchemaError, match=r"orders\.created_at"):
        build_customer_table(naive, customers())
    dup = orders({"customer_id": "a", "created_at": ago(1)}, {"customer_id": "a", "created_at": ago(1)})
    dup["order_id"] = "same"
    with pytest.raises(FrameSchemaError, match="duplicate"):
        build_customer_table(dup, customers())


def test_shared_email_goes_to_smallest_customer_id_and_shorthands_parse() -> None:
    frame = orders(
        {"email": "dup@x.io", "created_at": ago(1)},
        {"customer_id": "c7", "created_at": ago(400), "total": 70.0},
    )
    people = customers(
        {"customer_id": "c5", "email": "dup@x.io", "last_engaged_at": ago(45)},
        {"customer_id": "c4", "email": "dup@x.io", "email_consent": "PENDING"},
    )
    defs = {
        "pending": {"consent": ["PENDING"]},
        "opened_30_60": {"engaged_days": {"min": 30, "max": 60}},
        "top_all_time": {"revenue_top_percent": 50},
        "half_revenue_recent": {"revenue_pareto": {"share": 0.5, "within_days": 30}},
    }
    table, result = run(frame, people, definitions=defs)
    assert table.frame.loc["c4", "order_count"] == 1 and table.frame.loc["c5", "order_count"] == 0
    assert members(result, "pending") == {"c4"}
    assert members(result, "opened_30_60") == {"c5"}
    assert members(result, "top_all_time") == {"c7"}  # ceil(50% of 2 buyers) = 1
    assert members(result, "half_revenue_recent") == {"c4"}  # c7's order is outside 30 days
    with pytest.raises(ValueError, match="needs now"):
        segment_revenue_share(table, result["buyers"], within_days=30)
