"""Order rows grouped by customer (``Facts.o_groups``, kept by the snapshot) give exactly the tables
and memberships of the reference path (pandas frames -> scatter reductions), whatever the data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_segments_helpers import NOW, ago, customers, orders
from worker.segments import build_customer_table, segment_masks, table_from_facts
from worker.segments.engine import quintile_scores
from worker.segments.facts import facts_from_frames, group_key, group_starts, grouped
from worker.segments.frames import validate_customers, validate_lines, validate_orders
from worker.store.snapshot import _Columns, _Orders

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

order_rows = st.lists(
    st.fixed_dictionaries(
        {
            "who": st.integers(0, 6),
            "kind": st.sampled_from(["registered", "guest", "guest", "no_email", "anonymous"]),
            "age": st.integers(-1, 400),
            "hour": st.sampled_from([0, 12, 12, 23]),  # repeated times: ties broken by order id
            "cents": st.integers(0, 30_000),
            "cancelled": st.booleans(),
            "test": st.sampled_from([False, False, False, True]),
            "discount": st.booleans(),
            "channel": st.sampled_from([None, "google / cpc", "Newsletter / Email", "direct"]),
            "accepts": st.sampled_from([None, True, False]),
            "product": st.sampled_from([None, "p1", "p2"]),
        }
    ),
    max_size=40,
)
people = st.dictionaries(
    st.integers(0, 6),
    st.fixed_dictionaries(
        {
            "email": st.sampled_from(["own", "own", "shared", None]),  # shared: two ids, one email
            "consent": st.sampled_from(["SUBSCRIBED", "UNSUBSCRIBED", "UNKNOWN"]),
            "engaged": st.one_of(st.none(), st.integers(0, 90)),
        }
    ),
    max_size=5,
)


def _frames(rows: list[dict[str, Any]], registered: dict[int, dict[str, Any]]) -> tuple[pd.DataFrame, ...]:
    def order(i: int, r: dict[str, Any]) -> dict[str, Any]:
        cid = f"c{r['who']}" if r["kind"] in ("registered", "no_email") else None
        email = None if r["kind"] in ("no_email", "anonymous") else f"p{r['who']}@example.com"
        return {
            "order_id": f"o{(i * 7) % 11}-{i}",  # ids not in row order
            "customer_id": cid,
            "email": email,
            "created_at": ago(r["age"], r["hour"]),
            "total": r["cents"] / 100,
            "cancelled": r["cancelled"],
            "test": r["test"],
            "has_discount": r["discount"],
            "channel": r["channel"],
            "accepts_marketing": r["accepts"],
        }

    order_frame = orders(*(order(i, r) for i, r in enumerate(rows)))
    people_frame = customers(
        *(
            {
                "customer_id": f"c{who}",
                "email": {"own": f"p{who}@example.com", "shared": "p0@example.com", None: None}[p["email"]],
                "email_consent": p["consent"],
                "last_engaged_at": None if p["engaged"] is None else ago(p["engaged"]),
            }
            for who, p in registered.items()
        )
    )
    lines = pd.DataFrame(
        {
            "order_id": [f"o{(i * 7) % 11}-{i}" for i, r in enumerate(rows) if r["product"]],
            "line_no": [1 for r in rows if r["product"]],
            "product_id": [r["product"] for r in rows if r["product"]],
            "sku": [None for r in rows if r["product"]],
            "quantity": [1 for r in rows if r["product"]],
        }
    )
    return order_frame, people_frame, lines


def _assert_same(reference: Any, fast: Any) -> None:
    pd.testing.assert_frame_equal(reference.frame, fast.frame)
    expected, got = segment_masks(reference, NOW), segment_masks(fast, NOW)
    assert expected.keys() == got.keys()
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name
    pd.testing.assert_frame_equal(reference.purchases, fast.purchases)


@SETTINGS
@given(order_rows, people, st.randoms(use_true_random=False))
def test_grouped_orders_give_the_reference_tables_and_segments(
    rows: list[dict[str, Any]], registered: dict[int, dict[str, Any]], random: Any
) -> None:
    order_frame, people_frame, lines = _frames(rows, registered)
    reference = build_customer_table(order_frame, people_frame, lines)
    shuffled = order_frame.iloc[random.sample(range(len(order_frame)), len(order_frame))]
    facts = facts_from_frames(validate_orders(shuffled), validate_customers(people_frame), validate_lines(lines))
    fast = table_from_facts(grouped(facts))
    assert fast.runs is not None and reference.runs is None
    _assert_same(reference, fast)
    # row of every order agrees with the reference once orders are matched by id
    ref_rows = dict(zip(reference.facts.order_ids(), reference.codes.tolist(), strict=True))
    assert [ref_rows[i] for i in fast.facts.order_ids()] == fast.codes.tolist()


@SETTINGS
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 30), st.integers(-1, 4), st.integers(-1, 4)), max_size=12), max_size=6)
)
def test_snapshot_order_runs_stay_grouped_through_upserts(batches: list[list[tuple[int, int, int]]]) -> None:
    """Random upsert batches (new rows, re-ingested rows that keep or change their customer id or
    email) keep the columns grouped by key, every row exactly once with its latest values."""
    runs = _Orders(np.empty(0, np.int64), {})
    latest: dict[int, tuple[int, int]] = {}
    for batch in batches:
        unique = {row: (cid, email) for row, cid, email in batch}  # one version per row in a batch
        rows = np.asarray(sorted(unique), dtype=np.int64)
        cid = np.asarray([unique[r][0] for r in rows.tolist()], dtype=np.int32)
        email = np.asarray([unique[r][1] for r in rows.tolist()], dtype=np.int32)
        runs.upsert(_Columns(rows, {"o_cid": cid, "o_email": email, "o_ns": rows * 10}))
        latest.update(unique)
    assert sorted(runs.row.tolist()) == sorted(latest)
    assert bool((runs.key[1:] >= runs.key[:-1]).all())
    if latest:
        assert np.array_equal(runs.key, group_key(runs.data["o_cid"], runs.data["o_email"]))
    assert np.array_equal(runs.starts, group_starts(runs.key))
    for position, row in enumerate(runs.row.tolist()):
        assert runs.at[row] == position
        assert (int(runs.data["o_cid"][position]), int(runs.data["o_email"][position])) == latest[row]
        assert runs.data["o_ns"][position] == row * 10


@SETTINGS
@given(st.lists(st.integers(0, 6), max_size=60), st.sampled_from(["int16", "int64", "float64"]))
def test_quintile_scores_without_a_sort_equal_the_stable_rank_scores(values: list[int], dtype: str) -> None:
    array = np.asarray(values, dtype=dtype)
    n = len(array)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(array, kind="stable")] = np.arange(1, n + 1, dtype=np.int64)
    assert quintile_scores(array).tolist() == ((rank * 5 + n - 1) // n).tolist()
