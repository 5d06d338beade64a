"""Compile segment definitions to boolean masks over the customer table; pure, ``now`` injected.

Every mask is a numpy bool array aligned with ``table.frame`` (sorted by customer key), so results
never depend on input row order. Missing values (no order, no engagement) never satisfy a range.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pandas as pd

from worker.segments.conditions import (
    AllOf,
    AnyOf,
    Bought,
    Condition,
    ConsentIn,
    DaysSince,
    FirstChannel,
    Measure,
    Not,
    Range,
    RevenuePareto,
    RevenueTop,
    Rfm,
    SegmentRef,
    WinbackDue,
)
from worker.segments.config import SegmentDefinition, SegmentsConfig, check_graph
from worker.segments.defaults import RFM_GRID
from worker.segments.table import NS_PER_DAY, CustomerTable, group_sum

Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
_EPOCH = date(1970, 1, 1)
_EVENT_COLUMNS = {
    "last_order": "last_order_at",
    "first_order": "first_order_at",
    "engaged": "last_engaged_at",
}


def utc_day(now: datetime) -> int:
    """Day number (since 1970-01-01) of ``now``'s UTC date; a naive ``now`` is taken as UTC."""
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return (aware.astimezone(UTC).date() - _EPOCH).days


def _days(series: pd.Series) -> Floats:
    """UTC day numbers of a datetime column, NaN where missing."""
    ns = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
    return np.where(series.isna().to_numpy(), np.nan, (ns // NS_PER_DAY).astype(np.float64))


def _in_range(values: Floats, bounds: Range) -> Mask:
    mask = ~np.isnan(values)
    if bounds.min is not None:
        mask &= values >= bounds.min
    if bounds.max is not None:
        mask &= values <= bounds.max
    return mask


def quintile_scores(values: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """Scores 1..5 by rank 1..n (ties in position order, i.e. by customer key): ceil(5 * rank / n)."""
    n = len(values)
    if n == 0:
        return np.empty(0, np.int64)
    rank = pd.Series(values).rank(method="first").to_numpy(np.int64)
    scores: npt.NDArray[np.int64] = ((rank * 5 + n - 1) // n).astype(np.int64)
    return scores


def rfm_scores(table: CustomerTable) -> pd.DataFrame:
    """R, F, M scores and group for customers with a counted order, indexed by customer key."""
    frame = table.frame
    buyers = frame[frame["order_count"].to_numpy() > 0]
    last = buyers["last_order_at"].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
    r = quintile_scores(last)
    f = quintile_scores(buyers["order_count"].to_numpy())
    m = quintile_scores(buyers["revenue"].to_numpy())
    grid = np.array([RFM_GRID[score] for score in (1, 2, 3, 4, 5)], dtype=object)
    groups = grid[r - 1, f - 1] if len(buyers) else np.empty(0, dtype=object)
    return pd.DataFrame({"r": r, "f": f, "m": m, "group": groups}, index=buyers.index)


class _Evaluator:
    def __init__(self, table: CustomerTable, now: datetime, definitions: dict[str, SegmentDefinition]):
        self.table = table
        self.frame = table.frame
        self.n = len(table.frame)
        self.today = utc_day(now)
        self.definitions = definitions
        self.masks: dict[str, Mask] = {}
        self._age: dict[str, Floats] = {}
        self._window: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}
        self._rfm: pd.DataFrame | None = None

    def age(self, event: str) -> Floats:
        if event not in self._age:
            column = _EVENT_COLUMNS[event]
            self._age[event] = self.today - _days(self.frame[column])
        return self._age[event]

    def window(self, within_days: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(revenue micros, counted orders) per customer over orders at age < within_days (0: all)."""
        if within_days not in self._window:
            orders = self.table.orders
            code = orders["code"].to_numpy(np.int64)
            micros = orders["total_micros"].to_numpy(np.int64)
            if within_days:
                keep = (self.today - orders["day"].to_numpy(np.int64)) < within_days
                code, micros = code[keep], micros[keep]
            self._window[within_days] = (
                group_sum(code, micros, self.n),
                np.bincount(code, minlength=self.n).astype(np.int64),
            )
        return self._window[within_days]

    def segment(self, name: str) -> Mask:
        if name not in self.masks:
            self.masks[name] = self.eval(self.definitions[name].rule)
        return self.masks[name]

    def eval(self, cond: Condition) -> Mask:
        match cond:
            case AllOf(items=items):
                mask = np.ones(self.n, dtype=bool)
                for item in items:
                    mask &= self.eval(item)
                return mask
            case AnyOf(items=items):
                mask = np.zeros(self.n, dtype=bool)
                for item in items:
                    mask |= self.eval(item)
                return mask
            case Not(item=item):
                return ~self.eval(item)
            case SegmentRef(name=name):
                return self.segment(name).copy()
            case DaysSince(event=event, range=bounds):
                return _in_range(self.age(event), bounds)
            case Measure(field=field, range=bounds):
                return _in_range(self.frame[field].to_numpy(np.float64), bounds)
            case ConsentIn(values=values):
                return self.frame["email_consent"].isin(values).to_numpy()
            case FirstChannel(any_of=any_of, contains=contains):
                channel = self.frame["first_channel"].str.lower()
                mask = np.array(channel.isin(any_of).to_numpy(), dtype=bool)
                for part in contains:
                    mask |= channel.str.contains(part, regex=False).fillna(False).to_numpy(dtype=bool)
                return mask
            case Bought():
                return self._bought(cond)
            case Rfm():
                return self._rfm_mask(cond)
            case RevenueTop(percent=percent, within_days=within):
                return self._revenue_top(percent, within)
            case RevenuePareto(share=share, within_days=within):
                return pareto_mask(self.window(within)[0], share)
            case WinbackDue(k=k):
                return self._winback(k)
        raise AssertionError(f"unhandled condition {cond!r}")  # pragma: no cover

    def _bought(self, cond: Bought) -> Mask:
        bought = self.table.purchases
        hit = bought["product_id"].isin(cond.product_ids).to_numpy() | bought["sku"].isin(cond.skus).to_numpy()
        if cond.within_days:
            age = self.today - _days(bought["last_bought_at"])
            hit &= age < cond.within_days
        mask = np.zeros(self.n, dtype=bool)
        mask[bought["code"].to_numpy(np.int64)[hit]] = True
        return mask

    def _rfm_mask(self, cond: Rfm) -> Mask:
        if self._rfm is None:
            self._rfm = rfm_scores(self.table)
        scores = self._rfm
        hit = np.ones(len(scores), dtype=bool)
        if cond.groups:
            hit &= scores["group"].isin(cond.groups).to_numpy()
        for column, bounds in (("r", cond.r), ("f", cond.f), ("m", cond.m)):
            if bounds is not None:
                hit &= _in_range(scores[column].to_numpy(np.float64), bounds)
        return self.frame.index.isin(scores.index[hit])

    def _revenue_top(self, percent: float, within: int) -> Mask:
        revenue, count = self.window(within)
        candidates = np.flatnonzero(count > 0)
        take = math.ceil(len(candidates) * percent / 100 - 1e-9)
        # largest revenue first; stable sort keeps key order among ties
        ordered = candidates[np.argsort(-revenue[candidates], kind="stable")][:take]
        mask = np.zeros(self.n, dtype=bool)
        mask[ordered[revenue[ordered] > 0]] = True
        return mask

    def _winback(self, k: float) -> Mask:
        gaps = self.frame["mean_gap_days"].to_numpy(np.float64)
        counts = self.frame["order_count"].to_numpy()
        repeat_gaps = gaps[counts >= 2]
        median = float(np.median(repeat_gaps)) if len(repeat_gaps) else np.nan
        gap = np.where(counts >= 2, gaps, np.where(counts == 1, median, np.nan))
        age = self.age("last_order")
        with np.errstate(invalid="ignore"):
            return ~np.isnan(gap) & ~np.isnan(age) & (age > k * gap)


def pareto_mask(revenue: npt.NDArray[np.int64], share: float) -> Mask:
    """Smallest set holding ``share`` of the (positive) revenue: largest first, ties by position."""
    mask = np.zeros(len(revenue), dtype=bool)
    positive = np.flatnonzero(revenue > 0)
    if len(positive) == 0:
        return mask
    ordered = positive[np.argsort(-revenue[positive], kind="stable")]
    cumulative = np.cumsum(revenue[ordered])
    total = int(cumulative[-1])
    # exact: first prefix with cumulative >= share * total (share as its decimal text, 0.8 = 4/5)
    target = math.ceil(Fraction(repr(share)) * total)
    take = int(np.searchsorted(cumulative, max(target, 1), side="left")) + 1
    mask[ordered[: min(take, len(ordered))]] = True
    return mask


def compute_segments(table: CustomerTable, now: datetime, config: SegmentsConfig | None = None) -> dict[str, pd.Index]:
    """Members (customer keys, sorted) of every resolved segment at ``now``."""
    definitions = (config or SegmentsConfig()).resolved()
    evaluator = _Evaluator(table, now, definitions)
    index = table.frame.index
    for name in check_graph(definitions):  # dependency order: references are computed first
        evaluator.segment(name)
    return {name: index[evaluator.masks[name]] for name in definitions}


def segment_revenue_share(
    table: CustomerTable, members: pd.Index, now: datetime | None = None, within_days: int = 0
) -> float:
    """Share of revenue (all time, or orders at age < ``within_days`` at ``now``) held by ``members``."""
    if within_days and now is None:
        raise ValueError("segment_revenue_share: within_days needs now")
    evaluator = _Evaluator(table, now or datetime.now(UTC), {})
    revenue = evaluator.window(within_days)[0]
    total = int(revenue.sum())
    if total <= 0:
        return 0.0
    held = int(revenue[table.frame.index.isin(members)].sum())
    return held / total
