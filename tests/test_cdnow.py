"""The real CDNOW log (shipped with lifetimes) through our orders-CSV path, checked against lifetimes.

CDNOW: 69,659 rows of ``customer_id date(YYYYMMDD) number_of_cds dollar_value`` for 23,570 customers
who first bought in Q1 1997, followed to 1998-06-30. A customer often has several rows on one day.

How rows map to our model: every row is one order (``order_id`` = customer id + row number), dated
that day at 00:00 UTC, ``total`` = ``dollar_value`` (some rows are 0.00), currency USD.

Definitions, ours (``build_customer_table``) against lifetimes' ``summary_data_from_transaction_data``
with ``freq="D"`` (it first sums all rows of a customer on one day into one "period"):

====================  ===============================================  ===========================================
quantity              lifetimes                                         ours
====================  ===============================================  ===========================================
purchases             ``frequency`` = distinct purchase days - 1        ``order_count`` = rows (orders), first
                      (repeat *periods*; the first day never counts)    included; equal to frequency + 1 only for
                                                                        customers with one order per day
recency               ``recency`` = last day - first day (days)        ``last_order_at`` - ``first_order_at`` in
                                                                        whole UTC days: identical
age                   ``T`` = observation end - first day (days)       ``first_order_days`` age = as-of day -
                                                                        first order day: identical
value                 ``monetary_value`` = mean of the per-day sums    ``revenue`` = sum of all order totals,
                      over repeat days only (first day excluded; 0     first day included; no mean
                      when frequency is 0)
gap                   (none; recency / frequency is the mean gap        ``mean_gap_days`` = recency / (order_count
                      between purchase days)                            - 1): same-day orders shrink it
====================  ===============================================  ===========================================

So the equivalent quantities, compared exactly for every customer: frequency == distinct order days
- 1; recency == last - first order day; T == as-of - first order day; monetary_value * frequency ==
revenue - first-day revenue (relative 1e-9, float sums against our integer micro-unit sums).

The dataset is located with importlib.resources, not ``lifetimes.datasets``: that module imports
``pkg_resources``, whose import-time UserWarning would fail the run under ``filterwarnings = error``.
"""

from __future__ import annotations

import csv
import importlib.resources
import math
from datetime import UTC, date, datetime

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from lifetimes.utils import summary_data_from_transaction_data

from worker.orders_csv import orders_frame, read_orders_csv
from worker.segments import CustomerTable, build_customer_table, empty_customers, rfm_scores

CDNOW = importlib.resources.files("lifetimes").joinpath("datasets", "CDNOW_master.txt")
CUSTOMERS = 23_570
ROWS = 69_659
AS_OF = date(1998, 7, 1)  # the log's last day is 1998-06-30
MID = date(1997, 9, 30)  # mid-log: later rows are left out on both sides


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    with importlib.resources.as_file(CDNOW) as path:
        frame = pd.read_csv(path, sep=r"\s+", dtype=str)
    assert list(frame.columns) == ["customer_id", "date", "number_of_cds", "dollar_value"]
    assert (len(frame), frame["customer_id"].nunique()) == (ROWS, CUSTOMERS)
    assert (frame["date"].min(), frame["date"].max()) == ("19970101", "19980630")
    return frame


@pytest.fixture(scope="module")
def orders(raw: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The log written as an orders CSV and read back through ``read_orders_csv``/``orders_frame``."""
    path = tmp_path_factory.mktemp("cdnow") / "orders.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order_id", "customer_id", "email", "created_at", "total", "currency"])
        for i, (cid, day, value) in enumerate(zip(raw["customer_id"], raw["date"], raw["dollar_value"], strict=True)):
            created = f"{day[:4]}-{day[4:6]}-{day[6:]}"
            writer.writerow([f"{cid}-{i}", cid, f"cdnow{cid}@example.com", created, value, "USD"])
    read = read_orders_csv(path)
    assert read.problems == []
    assert len(read.orders) == ROWS
    return orders_frame(read.orders)


def _until(orders: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Orders on or before the as-of UTC day (what ``segments_from_csv`` keeps)."""
    keep = (orders["created_at"].dt.date <= as_of).to_numpy(dtype=bool)
    kept: pd.DataFrame = orders.loc[keep].reset_index(drop=True)
    return kept


def _lifetimes(raw: pd.DataFrame, as_of: date) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "date": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "dollar_value": raw["dollar_value"].astype(float),
        }
    )
    summary: pd.DataFrame = summary_data_from_transaction_data(
        frame, "customer_id", "date", monetary_value_col="dollar_value", observation_period_end=str(as_of)
    )
    return summary


def _day_numbers(series: pd.Series) -> npt.NDArray[np.int64]:
    """UTC day numbers (days since 1970-01-01)."""
    days = (series.dt.tz_convert("UTC").dt.tz_localize(None) - pd.Timestamp("1970-01-01")).dt.days
    return np.asarray(days, dtype=np.int64)


@pytest.mark.parametrize("as_of", [AS_OF, MID], ids=str)
def test_per_customer_quantities_match_lifetimes(raw: pd.DataFrame, orders: pd.DataFrame, as_of: date) -> None:
    used = _until(orders, as_of)
    table = build_customer_table(used, empty_customers())
    ours = table.frame
    theirs = _lifetimes(raw, as_of)
    assert sorted(ours.index) == sorted(theirs.index)
    theirs = theirs.loc[ours.index]
    if as_of == AS_OF:
        assert len(ours) == CUSTOMERS and int(ours["order_count"].sum()) == ROWS

    # per (customer, UTC day) sums of what we loaded: lifetimes' periods
    daily = (
        used.assign(day=_day_numbers(used["created_at"]))
        .groupby(["customer_id", "day"], sort=True)["total"]
        .sum()
        .reset_index()
    )
    per_customer = daily.groupby("customer_id", sort=True)
    days = per_customer.size().loc[ours.index].to_numpy()
    first_day_revenue = per_customer["total"].first().loc[ours.index].to_numpy()

    first = _day_numbers(ours["first_order_at"])
    last = _day_numbers(ours["last_order_at"])
    as_of_day = (as_of - date(1970, 1, 1)).days

    assert np.array_equal(theirs["frequency"].to_numpy(), days - 1)
    assert np.array_equal(theirs["recency"].to_numpy(), last - first)
    assert np.array_equal(theirs["T"].to_numpy(), as_of_day - first)
    repeat_revenue = ours["revenue"].to_numpy() - first_day_revenue
    frequency = theirs["frequency"].to_numpy()
    expected = np.divide(repeat_revenue, frequency, out=np.zeros_like(repeat_revenue), where=frequency > 0)
    assert np.allclose(theirs["monetary_value"].to_numpy(), expected, rtol=1e-9, atol=1e-9)

    # where the definitions differ, they differ only by same-day orders
    counts = ours["order_count"].to_numpy()
    assert (counts >= days).all()
    assert (counts > days).any()  # CDNOW has same-day rows: order_count - 1 is not frequency
    gaps = ours["mean_gap_days"].to_numpy()
    repeat = counts >= 2
    assert np.allclose(gaps[repeat], (last - first)[repeat] / (counts[repeat] - 1), rtol=1e-12)


def _quintiles(values: dict[str, float]) -> dict[str, int]:
    """ceil(5 * rank / n) with rank 1..n ascending, ties by customer key: plain Python."""
    ordered = sorted(values, key=lambda key: (values[key], key))
    n = len(ordered)
    return {key: math.ceil(5 * rank / n) for rank, key in enumerate(ordered, start=1)}


def test_rfm_quintiles_match_a_plain_computation(orders: pd.DataFrame) -> None:
    table: CustomerTable = build_customer_table(_until(orders, AS_OF), empty_customers())
    scores = rfm_scores(table)
    frame = table.frame
    keys = list(frame.index)
    last = dict(zip(keys, (ts.value for ts in frame["last_order_at"]), strict=True))
    expected = {
        "r": _quintiles({k: float(v) for k, v in last.items()}),
        "f": _quintiles(dict(zip(keys, frame["order_count"].astype(float), strict=True))),
        "m": _quintiles(dict(zip(keys, frame["revenue"].astype(float), strict=True))),
    }
    n = len(keys)
    for column, want in expected.items():
        got = scores[column]
        assert got.to_dict() == want, column
        counts = got.value_counts().sort_index().to_dict()
        # quintiles of n ranked customers: score s holds ranks ceil(n(s-1)/5)+1 .. floor(n s/5)
        assert counts == {s: n * s // 5 - n * (s - 1) // 5 for s in range(1, 6)}, column
    # heavy ties (most CDNOW customers bought once) are split by key: F = 1 and F = 2 both hold one-order buyers
    one_order = frame["order_count"].to_numpy() == 1
    assert set(scores["f"][one_order]) >= {1, 2}


def test_first_purchase_cohort_is_q1_1997(orders: pd.DataFrame) -> None:
    first = build_customer_table(orders, empty_customers()).frame["first_order_at"]
    assert first.min() == datetime(1997, 1, 1, tzinfo=UTC)
    assert first.max() <= datetime(1997, 3, 31, tzinfo=UTC)
