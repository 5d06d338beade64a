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
    RFM_GROUPS,
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
from worker.segments.facts import CONSENTS, NAT
from worker.segments.table import NS_PER_DAY, CustomerTable, group_sum

Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
_EPOCH = date(1970, 1, 1)


def utc_day(now: datetime) -> int:
    """Day number (since 1970-01-01) of ``now``'s UTC date; a naive ``now`` is taken as UTC."""
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return (aware.astimezone(UTC).date() - _EPOCH).days


def _days(ns: npt.NDArray[np.int64]) -> Floats:
    """UTC day numbers of int64 nanoseconds, NaN where missing (NaT)."""
    return np.where(ns == NAT, np.nan, (ns // NS_PER_DAY).astype(np.float64))


def _in_range(values: Floats, bounds: Range) -> Mask:
    mask = ~np.isnan(values)
    if bounds.min is not None:
        mask &= values >= bounds.min
    if bounds.max is not None:
        mask &= values <= bounds.max
    return mask


def quintile_scores(values: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """Scores 1..5 by rank 1..n (ties in position order, i.e. by customer key): ceil(5 * rank / n).

    Without a sort: score <= s exactly when rank <= K = floor(s * n / 5), and the rank-K value ``t``
    comes from a partition; a row ranks above K when its value is larger, or equal with more than
    ``K - #(values < t)`` equal values up to and including its position.
    """
    n = len(values)
    if n == 0:
        return np.empty(0, np.int64)
    bounds = [s * n // 5 for s in (1, 2, 3, 4)]
    kth = sorted({k - 1 for k in bounds if k > 0})
    part = np.partition(values, kth) if kth else values
    scores = np.ones(n, dtype=np.int64)
    for k in bounds:
        if k == 0:
            scores += 1
            continue
        t = part[k - 1]
        above = values > t
        equal = values == t
        room = k - int(np.count_nonzero(values < t))
        above |= equal & (np.cumsum(equal) > room)
        scores += above
    return scores


def _rfm_arrays(table: CustomerTable) -> tuple[npt.NDArray[np.int64], ...]:
    """Rows of buyers and their R, F, M scores and group code (index into RFM_GROUPS)."""
    buyers = np.flatnonzero(table.order_count > 0)
    r, f, m = (quintile_scores(v[buyers]) for v in (table.last_ns, table.order_count, table.revenue_micros))
    grid = np.array([[RFM_GROUPS.index(g) for g in RFM_GRID[score]] for score in (1, 2, 3, 4, 5)], dtype=np.int64)
    groups = grid[r - 1, f - 1] if len(buyers) else np.empty(0, dtype=np.int64)
    return buyers, r, f, m, groups


def rfm_scores(table: CustomerTable) -> pd.DataFrame:
    """R, F, M scores and group for customers with a counted order, indexed by customer key."""
    buyers, r, f, m, groups = _rfm_arrays(table)
    names = np.asarray(RFM_GROUPS, dtype=object)[groups]
    return pd.DataFrame({"r": r, "f": f, "m": m, "group": names}, index=table.index[buyers])


class _Evaluator:
    def __init__(self, table: CustomerTable, now: datetime, definitions: dict[str, SegmentDefinition]):
        self.table = table
        self.n = len(table)
        self.today = utc_day(now)
        self.definitions = definitions
        self.masks: dict[str, Mask] = {}
        self._age: dict[str, Floats] = {}
        self._window: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}
        self._rfm: tuple[npt.NDArray[np.int64], ...] | None = None
        self._by_revenue: dict[int, npt.NDArray[np.int64]] = {}

    def age(self, event: str) -> Floats:
        if event not in self._age:
            ns = {"last_order": self.table.last_ns, "first_order": self.table.first_ns}.get(event)
            self._age[event] = self.today - _days(self.table.engaged_ns if ns is None else ns)
        return self._age[event]

    def window(self, within_days: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(revenue micros, counted orders) per customer over orders at age < within_days (0: all)."""
        if within_days not in self._window:
            table = self.table
            if within_days:
                # orders on/after day today - within + 1 (UTC)
                inside = table.facts.o_ns >= (self.today - within_days + 1) * NS_PER_DAY
                runs = table.runs
                if runs is not None:  # grouped orders: two sequential passes
                    inside &= table.counted
                    self._window[within_days] = (
                        runs.sum(np.where(inside, table.order_micros, 0))[: self.n],
                        runs.sum(inside.view(np.int8))[: self.n],
                    )
                    return self._window[within_days]
                rows = np.flatnonzero(inside)  # a subset, so no full-length pass but this one
                code = table.order_code[rows]  # bin n: orders that do not count
                self._window[within_days] = (
                    group_sum(code, table.order_micros[rows], self.n + 1)[: self.n],
                    np.bincount(code, minlength=self.n + 1)[: self.n].astype(np.int64),
                )
            else:
                self._window[within_days] = (table.revenue_micros, table.order_count)
        return self._window[within_days]

    def segment(self, name: str) -> Mask:
        if name not in self.masks:
            self.masks[name] = self.eval(self.definitions[name].rule)
        return self.masks[name]

    def measure(self, field: str) -> Floats:
        if field == "order_count":
            return self.table.order_count.astype(np.float64)
        if field == "revenue":
            return self.table.revenue
        return self.table.discount_share

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
                return _in_range(self.measure(field), bounds)
            case ConsentIn(values=values):
                wanted = [CONSENTS.index(v) for v in values if v in CONSENTS]
                return np.isin(self.table.consent, np.asarray(wanted, dtype=np.int8))
            case FirstChannel(any_of=any_of, contains=contains):
                return self._first_channel(any_of, contains)
            case Bought(product_ids=ids, skus=skus, within_days=within):
                return self.table.bought(ids, skus, self.today - within + 1 if within else None)
            case Rfm():
                return self._rfm_mask(cond)
            case RevenueTop(percent=percent, within_days=within):
                return self._revenue_top(percent, within)
            case RevenuePareto(share=share, within_days=within):
                return pareto_mask(self.window(within)[0], share, self.by_revenue(within))
            case WinbackDue(k=k):
                return self._winback(k)
        raise AssertionError(f"unhandled condition {cond!r}")  # pragma: no cover

    def _first_channel(self, any_of: tuple[str, ...], contains: tuple[str, ...]) -> Mask:
        """Match on the distinct channel strings only, then spread to the customers by code."""
        codes = self.table.first_channel_code
        distinct = np.unique(codes[codes >= 0])
        strings = self.table.facts.strings.strings
        hits = [c for c in distinct.tolist() if _channel_matches(strings[c].lower(), any_of, contains)]
        return np.isin(codes, np.asarray(hits, dtype=np.int64))

    def _rfm_mask(self, cond: Rfm) -> Mask:
        if self._rfm is None:
            self._rfm = _rfm_arrays(self.table)
        buyers, r, f, m, groups = self._rfm
        hit = np.ones(len(buyers), dtype=bool)
        if cond.groups:
            hit &= np.isin(groups, [RFM_GROUPS.index(g) for g in cond.groups])
        for scores, bounds in ((r, cond.r), (f, cond.f), (m, cond.m)):
            if bounds is not None:
                hit &= _in_range(scores.astype(np.float64), bounds)
        mask = np.zeros(self.n, dtype=bool)
        mask[buyers[hit]] = True
        return mask

    def by_revenue(self, within: int) -> npt.NDArray[np.int64]:
        """Rows by revenue in the window, largest first; the stable sort keeps key order among ties."""
        if within not in self._by_revenue:
            self._by_revenue[within] = np.argsort(-self.window(within)[0], kind="stable")
        return self._by_revenue[within]

    def _revenue_top(self, percent: float, within: int) -> Mask:
        revenue, count = self.window(within)
        ordered = self.by_revenue(within)
        ordered = ordered[count[ordered] > 0]
        take = math.ceil(len(ordered) * percent / 100 - 1e-9)
        ordered = ordered[:take]
        mask = np.zeros(self.n, dtype=bool)
        mask[ordered[revenue[ordered] > 0]] = True
        return mask

    def _winback(self, k: float) -> Mask:
        gaps = self.table.mean_gap_days
        counts = self.table.order_count
        repeat_gaps = gaps[counts >= 2]
        median = float(np.median(repeat_gaps)) if len(repeat_gaps) else np.nan
        gap = np.where(counts >= 2, gaps, np.where(counts == 1, median, np.nan))
        age = self.age("last_order")
        with np.errstate(invalid="ignore"):
            return ~np.isnan(gap) & ~np.isnan(age) & (age > k * gap)


def _channel_matches(channel: str, any_of: tuple[str, ...], contains: tuple[str, ...]) -> bool:
    return channel in any_of or any(part in channel for part in contains)


def pareto_mask(revenue: npt.NDArray[np.int64], share: float, by_revenue: npt.NDArray[np.int64] | None = None) -> Mask:
    """Smallest set holding ``share`` of the (positive) revenue: largest first, ties by position."""
    mask = np.zeros(len(revenue), dtype=bool)
    if by_revenue is None:
        by_revenue = np.argsort(-revenue, kind="stable")
    ordered = by_revenue[revenue[by_revenue] > 0]
    if len(ordered) == 0:
        return mask
    cumulative = np.cumsum(revenue[ordered])
    total = int(cumulative[-1])
    # exact: first prefix with cumulative >= share * total (share as its decimal text, 0.8 = 4/5)
    target = math.ceil(Fraction(repr(share)) * total)
    take = int(np.searchsorted(cumulative, max(target, 1), side="left")) + 1
    mask[ordered[: min(take, len(ordered))]] = True
    return mask


def segment_masks(table: CustomerTable, now: datetime, config: SegmentsConfig | None = None) -> dict[str, Mask]:
    """Membership of every resolved segment at ``now`` as boolean masks over the table's rows."""
    definitions = (config or SegmentsConfig()).resolved()
    evaluator = _Evaluator(table, now, definitions)
    for name in check_graph(definitions):  # dependency order: references are computed first
        evaluator.segment(name)
    return {name: evaluator.masks[name] for name in definitions}


def compute_segments(table: CustomerTable, now: datetime, config: SegmentsConfig | None = None) -> dict[str, pd.Index]:
    """Members (customer keys, sorted) of every resolved segment at ``now``."""
    index = table.index
    return {name: index[mask] for name, mask in segment_masks(table, now, config).items()}


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
    held = int(revenue[table.index.isin(members)].sum())
    return held / total
