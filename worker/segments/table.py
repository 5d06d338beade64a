"""The customer table: one row per customer key, aggregated from orders with vectorized group ops.

Key resolution, per order (test orders are dropped first):
1. the order's ``customer_id`` when it has one;
2. a guest order whose email matches a customer's email takes that customer's id. Emails come from
   the customers frame first, then from registered orders (so the CSV path merges too); an email
   shared by several ids goes to the smallest id;
3. else the normalized email; orders with neither id nor email are excluded.

Counted orders are the non-cancelled, non-test ones; only they enter counts, revenue and dates. A
fully refunded order (current total 0) is still a counted order, with revenue 0. Day arithmetic is in
whole UTC calendar days. Money is summed in integer micro-units, so results do not depend on row order.

Identity and consent come from the customers frame; a key without a customers row (guests, and store
ids only seen on orders, as in the CSV path) takes email/phone from its latest order that has one, and
``email_consent`` SUBSCRIBED when its latest non-test order (cancelled ones included: consent given at
checkout stands) has ``accepts_marketing`` true, else UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.kernel.records import Consent
from worker.segments.facts import CONSENTS, NAT, UNKNOWN_CONSENT, Facts, facts_from_frames
from worker.segments.frames import empty_lines, validate_customers, validate_lines, validate_orders

NS_PER_DAY = 86_400 * 10**9
#: threads for the scatter path's independent passes (facts without ``o_groups``: the frame path).
#: Measured on 2 cores with other work running (docs/performance.md): a pool of 2 was no faster than
#: none and lost most under contention, so none by default; ``bench/segments.py --threads`` re-measures.
THREADS = 1
MICROS = 1_000_000

IntArray = npt.NDArray[np.int64]
ObjArray = npt.NDArray[np.object_]
BoolArray = npt.NDArray[np.bool_]
_NAT = NAT
_SUBSCRIBED = CONSENTS.index(Consent.SUBSCRIBED.value)

#: columns of :attr:`CustomerTable.frame`, indexed by ``customer_key`` (sorted, unique). Text columns
#: are object arrays of ``str`` with ``None`` for missing (cheaper than ``str`` dtype at 1M rows).
TABLE_COLUMNS = (
    "customer_id",  # store id, None for keys that are only an email (guests)
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "email_consent",  # a Consent value
    "first_order_at",  # first counted order, UTC (NaT without counted orders)
    "last_order_at",
    "order_count",  # counted orders (int64)
    "revenue",  # sum of current totals of counted orders (float64; currencies are not converted)
    "mean_gap_days",  # (last - first order UTC day) / (order_count - 1); NaN below 2 orders
    "discount_share",  # share of counted orders with a discount; NaN without counted orders
    "first_channel",  # channel of the first counted order
    "last_engaged_at",  # last email open/click from the customers frame
)


def group_sum(codes: npt.NDArray[Any], values: IntArray, n: int) -> IntArray:
    """Exact int64 sums per code (order-independent, unlike float sums); ``ufunc.at`` beats groupby."""
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, codes, values)
    return out


def group_extreme(codes: npt.NDArray[Any], values: IntArray, n: int, *, latest: bool) -> IntArray:
    """Max (``latest``) or min per code; codes without rows get the int64 min / max."""
    if latest:
        out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(out, codes, values)
    else:
        out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(out, codes, values)
    return out


def extreme_rows(
    codes: IntArray,
    ns: IntArray,
    order_ids: Callable[[IntArray], list[str]],
    n: int,
    *,
    latest: bool,
    rows: IntArray | None = None,
) -> tuple[IntArray, IntArray]:
    """(code, row) of each code's earliest/latest row by (created_at, order_id), deterministic.

    ``codes`` may hold ``n`` for rows to ignore (one extra bin, so no row subset is ever copied).
    ``order_ids`` gives the ids of order rows (read for ties only, e.g. :meth:`Facts.order_ids`);
    ``rows``: when ``codes``/``ns`` are a subset, their order rows.
    """
    if len(codes) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ext = group_extreme(codes, ns, n + 1, latest=latest)
    return pick_extreme(codes, ns, ext[codes], order_ids, n, latest=latest, rows=rows)


def pick_extreme(
    codes: IntArray,
    ns: IntArray,
    ext: IntArray,
    order_ids: Callable[[IntArray], list[str]],
    n: int,
    *,
    latest: bool,
    rows: IntArray | None = None,
) -> tuple[IntArray, IntArray]:
    """:func:`extreme_rows` given each row's code extreme ``ext`` (aligned with ``codes``)."""
    cand = np.flatnonzero((ns == ext) & (codes < n))
    cand_codes = codes[cand]
    tied = np.bincount(cand_codes, minlength=n)[cand_codes] > 1
    if tied.any():  # same timestamp: order_id decides (rare, so the string sort stays small)
        tied_rows = cand[tied] if rows is None else rows[cand[tied]]
        oids = np.asarray(order_ids(tied_rows), dtype=object)
        pick = pd.DataFrame({"code": cand_codes[tied], "oid": oids, "row": cand[tied]})
        pick = pick.sort_values(["code", "oid"], ascending=[True, not latest], kind="stable")
        pick = pick.drop_duplicates("code")
        cand = np.concatenate([cand[~tied], pick["row"].to_numpy(np.int64)])
        cand_codes = codes[cand]
    return cand_codes, cand


class Runs:
    """Order rows grouped in runs that each belong to one table row (``facts.o_groups``, see
    :func:`worker.segments.facts.grouped`): per-row reductions are sequential ``reduceat`` passes over
    the runs, then a combine over the (few) rows that own several runs (a guest email merged into a
    customer id)."""

    def __init__(self, starts: IntArray, row: IntArray, m: int, n: int) -> None:
        self.starts, self.row, self.n = starts, row, n
        self.sizes: IntArray = np.diff(np.append(starts, m))
        alone = np.bincount(row, minlength=n + 1)[row] == 1  # runs alone in their row (excluded: row n)
        self.single, self.multi = np.flatnonzero(alone), np.flatnonzero(~alone)
        self.single_row, self.multi_row = row[self.single], row[self.multi]

    def per_order(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A per-row array (length n + 1) spread over the orders, sequentially."""
        out: npt.NDArray[Any] = np.repeat(values[self.row], self.sizes)
        return out

    def _combine(self, per_run: IntArray, fill: int, at: Any) -> IntArray:
        out = np.full(self.n + 1, fill, dtype=np.int64)
        out[self.single_row] = per_run[self.single]
        at(out, self.multi_row, per_run[self.multi])
        return out

    def sum(self, values: npt.NDArray[Any]) -> IntArray:
        """Exact int64 sums per row (length n + 1) of per-order values (zero where not counted)."""
        if len(self.starts) == 0:
            return np.zeros(self.n + 1, dtype=np.int64)
        return self._combine(np.add.reduceat(values, self.starts, dtype=np.int64), 0, np.add.at)

    def extreme(self, values: IntArray, *, latest: bool) -> IntArray:
        """Max (``latest``) or min per row; ``values`` holds the int64 min / max where not counted."""
        fill = np.iinfo(np.int64).min if latest else np.iinfo(np.int64).max
        if len(self.starts) == 0:
            return np.full(self.n + 1, fill, dtype=np.int64)
        ufunc = np.maximum if latest else np.minimum
        return self._combine(ufunc.reduceat(values, self.starts), fill, ufunc.at)


def _to_ts(ns: IntArray, valid: BoolArray) -> pd.DatetimeIndex:
    values = np.where(valid, ns, _NAT).view("datetime64[ns]")
    return pd.DatetimeIndex(values).tz_localize("UTC")


class CustomerTable:
    """Per-customer aggregates as arrays aligned with the sorted customer keys, plus what rules need.

    Rows are customer keys sorted as strings (``keys``: their codes in ``facts.strings``). Counted
    orders are kept compactly (``order_code`` = row, ``order_day`` = UTC day number, ``order_micros``)
    for windowed rules. Identity columns, the pandas :attr:`frame` and :attr:`purchases` are built on
    first use, so a recompute that does not need them does not pay for them.
    """

    def __init__(self, facts: Facts, live: BoolArray | None, key: IntArray) -> None:
        """``key``: the key code of every order (-1 excluded); with ``live`` None, of every run of
        ``facts.o_groups`` instead (the grouped path)."""
        f = self.facts = facts
        strings = f.strings
        order = strings.order
        size = len(strings)
        used = np.zeros(size + 1, dtype=bool)
        used[f.c_id] = True
        used[key] = True  # key -1 (excluded orders) marks the extra slot only
        self.keys: IntArray = order[used[:size][order]]
        n = self.n = len(self.keys)
        pos = np.full(size + 1, n, dtype=np.int64)  # excluded orders fall in the extra bin n
        pos[self.keys] = np.arange(n, dtype=np.int64)
        self.cust_pos: IntArray = pos[f.c_id]
        self.in_customers = np.zeros(n, dtype=bool)
        self.in_customers[self.cust_pos] = True
        self.order_micros = f.o_micros
        self.engaged_ns: IntArray = np.full(n, _NAT, dtype=np.int64)
        self.engaged_ns[self.cust_pos] = f.c_engaged_ns
        self.runs: Runs | None = None
        if live is None:
            assert f.o_groups is not None
            self._aggregate_runs(Runs(f.o_groups, pos[key], len(f.o_ns), n))
            return
        self.codes: IntArray = pos[key]  # row of every order, n for excluded ones
        counted = live & ~f.o_cancelled
        #: row of every order that counts, n for the others (one extra bin instead of row subsets)
        self.order_code: IntArray = np.where(counted, self.codes, n)
        c_codes = self.order_code

        def store_ids() -> BoolArray:  # rows with a registered order (weights: counts stay exact in float64)
            registered: BoolArray = np.bincount(self.codes, weights=f.o_cid >= 0, minlength=n + 1)[:n] > 0
            return registered

        def discounts() -> IntArray:  # a subset (about a third of the orders): less memory than weights
            return np.bincount(c_codes[f.o_discount], minlength=n + 1)[:n].astype(np.int64)

        # independent scatter passes over all orders; numpy releases the GIL, so cores can share them
        with ThreadPoolExecutor(THREADS) as pool:
            first = pool.submit(group_extreme, c_codes, f.o_ns, n + 1, latest=False)
            last = pool.submit(group_extreme, c_codes, f.o_ns, n + 1, latest=True)
            revenue = pool.submit(group_sum, c_codes, f.o_micros, n + 1)
            count = pool.submit(np.bincount, c_codes, minlength=n + 1)
            discounted = pool.submit(discounts)
            stored = pool.submit(store_ids)
            self.order_count: IntArray = count.result()[:n].astype(np.int64)
            has = self.order_count > 0
            self.first_ns: IntArray = np.where(has, first.result()[:n], _NAT)
            self.last_ns: IntArray = np.where(has, last.result()[:n], _NAT)
            self.revenue_micros = revenue.result()[:n]
            self.discount_count: IntArray = discounted.result()
            self.is_store_id = self.in_customers | stored.result()

    def _aggregate_runs(self, runs: Runs) -> None:
        """The aggregates of ``__init__`` over runs of grouped orders: sequential passes only."""
        f, n = self.facts, self.n
        self.runs = runs
        big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        # logical_not, not ~: the flags of a store with no orders can come as empty non-bool arrays
        counted = np.logical_not(f.o_test) & np.logical_not(f.o_cancelled)
        self.counted = counted  # orders of excluded runs count in row n only
        # counts and discounted counts in one pass: discounted ones in the high 32 bits (counts < 2**31)
        both = runs.sum(counted.view(np.int8) + (counted & f.o_discount).astype(np.int64) * (1 << 32))[:n]
        self.order_count = both & 0xFFFFFFFF
        self.discount_count = both >> 32
        has = self.order_count > 0
        self.first_ns = np.where(has, runs.extreme(np.where(counted, f.o_ns, big), latest=False)[:n], _NAT)
        self.last_ns = np.where(has, runs.extreme(np.where(counted, f.o_ns, small), latest=True)[:n], _NAT)
        self.revenue_micros = runs.sum(np.where(counted, f.o_micros, 0))[:n]
        live_runs = np.add.reduceat((~f.o_test).view(np.int8), runs.starts, dtype=np.int64) > 0
        registered = np.zeros(n + 1, dtype=bool)
        registered[runs.row[live_runs & (f.o_cid[runs.starts] >= 0)]] = True
        self.is_store_id = self.in_customers | registered[:n]

    @cached_property
    def codes(self) -> IntArray:  # grouped path: row of every order (n for excluded ones), on first use
        assert self.runs is not None
        out: IntArray = np.where(self.facts.o_test, self.n, np.repeat(self.runs.row, self.runs.sizes))
        return out

    @cached_property
    def order_code(self) -> IntArray:  # grouped path: row of every order that counts, n for the others
        out: IntArray = np.where(self.facts.o_cancelled, self.n, self.codes)
        return out

    def latest_rows(self, codes: IntArray, *, latest: bool) -> tuple[IntArray, IntArray]:
        """:func:`extreme_rows` over all orders (``codes``: full length, n for orders to ignore)."""
        f, runs = self.facts, self.runs
        if runs is None or len(codes) == 0:
            return extreme_rows(codes, f.o_ns, f.order_ids, self.n, latest=latest)
        fill = np.iinfo(np.int64).min if latest else np.iinfo(np.int64).max
        ext = runs.extreme(np.where(codes < self.n, f.o_ns, fill), latest=latest)
        return pick_extreme(codes, f.o_ns, runs.per_order(ext), f.order_ids, self.n, latest=latest)

    @cached_property
    def order_day(self) -> IntArray:
        """UTC day number of every order (for windowed rules; rows outside count sit in bin n)."""
        out: IntArray = self.facts.o_ns // NS_PER_DAY
        return out

    def __len__(self) -> int:
        return self.n

    # -- derived measures ----------------------------------------------------------------
    @cached_property
    def revenue(self) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = self.revenue_micros / MICROS
        return out

    @cached_property
    def mean_gap_days(self) -> npt.NDArray[np.float64]:
        span = (self.last_ns // NS_PER_DAY - self.first_ns // NS_PER_DAY).astype(np.float64)
        count = self.order_count
        with np.errstate(invalid="ignore"):
            return np.where(count >= 2, span / np.maximum(count - 1, 1), np.nan)

    @cached_property
    def discount_share(self) -> npt.NDArray[np.float64]:
        count = self.order_count
        return np.where(count > 0, self.discount_count / np.maximum(count, 1), np.nan)

    @cached_property
    def consent(self) -> npt.NDArray[np.int8]:
        """Consent codes (index into ``facts.CONSENTS``); see the module doc for keys without a row."""
        f = self.facts
        out = np.full(self.n, UNKNOWN_CONSENT, dtype=np.int8)
        out[self.cust_pos] = f.c_consent
        without = np.append(~self.in_customers, False)  # rows without a customers row
        if self.runs is None:
            rows = np.flatnonzero(without[self.codes])  # their orders
            codes = self.codes[rows]
        else:
            rows, codes = self._live_orders_of(without)
        if (f.o_accepts[rows] == 1).any():
            c, latest = extreme_rows(codes, f.o_ns[rows], f.order_ids, self.n, latest=True, rows=rows)
            out[c[f.o_accepts[rows[latest]] == 1]] = _SUBSCRIBED
        return out

    def _live_orders_of(self, wanted: BoolArray) -> tuple[IntArray, IntArray]:
        """Grouped path: the non-test orders of the runs of ``wanted`` rows (length n + 1, the extra
        slot for excluded runs), and each one's row; only those runs are read."""
        assert self.runs is not None
        runs = self.runs
        picked = wanted[runs.row]
        rows = np.flatnonzero(np.repeat(picked, runs.sizes))
        codes = np.repeat(runs.row[picked], runs.sizes[picked])
        live = ~self.facts.o_test[rows]
        return rows[live], codes[live]

    def _from_customers(self, column: npt.NDArray[np.int32]) -> IntArray:
        out = np.full(self.n, -1, dtype=np.int64)
        out[self.cust_pos] = column
        return out

    def _latest_code(self, values: npt.NDArray[np.int32], wanted: BoolArray) -> IntArray:
        """Per row, the code on its latest order that has one (-1 where none); computed for the
        ``wanted`` rows only (on the grouped path: only their runs' orders are read)."""
        out = np.full(self.n, -1, dtype=np.int64)
        if self.runs is None:
            codes = np.where(values >= 0, self.codes, self.n)
            c, rows = self.latest_rows(codes, latest=True)
            out[c] = values[rows]
            return out
        f = self.facts
        rows, codes = self._live_orders_of(np.append(wanted, False))
        keep = values[rows] >= 0
        rows, codes = rows[keep], codes[keep]
        c, latest = extreme_rows(codes, f.o_ns[rows], f.order_ids, self.n, latest=True, rows=rows)
        out[c] = values[rows[latest]]
        return out

    @cached_property
    def email_code(self) -> IntArray:
        out = np.where(self.is_store_id, self._from_customers(self.facts.c_email), self.keys)
        missing = out < 0
        if missing.any():
            out = np.where(missing, self._latest_code(self.facts.o_email, missing), out)
        return out

    @cached_property
    def phone_code(self) -> IntArray:
        out = self._from_customers(self.facts.c_phone)
        missing = out < 0
        if missing.any() and (self.facts.o_phone >= 0).any():
            out = np.where(missing, self._latest_code(self.facts.o_phone, missing), out)
        return out

    @cached_property
    def first_channel_code(self) -> IntArray:
        f = self.facts
        out = np.full(self.n, -1, dtype=np.int64)
        if self.runs is None:
            c, first = self.latest_rows(self.order_code, latest=False)
        else:  # the earliest counted order of a row is at its first_ns: compare run by run
            runs = self.runs
            ext = np.where(self.order_count > 0, self.first_ns, np.iinfo(np.int64).max)
            counted = self.counted
            per_order = runs.per_order(np.append(ext, np.iinfo(np.int64).max))
            cand = np.flatnonzero((f.o_ns == per_order) & counted)
            del per_order
            row = runs.row[np.searchsorted(runs.starts, cand, side="right") - 1]
            ns = f.o_ns[cand]
            c, first = pick_extreme(row, ns, ns, f.order_ids, self.n, latest=False, rows=cand)
            first = cand[first]
        out[c] = f.o_channel[first]
        return out

    def text(self, codes: npt.NDArray[Any]) -> ObjArray:
        """Strings of codes, None for -1."""
        out: ObjArray = self.facts.strings.array()[codes]
        return out

    # -- pandas views ------------------------------------------------------------------------
    @cached_property
    def index(self) -> pd.Index:
        return pd.Index(self.text(self.keys), name="customer_key", dtype=object)

    @cached_property
    def frame(self) -> pd.DataFrame:
        f = self.facts
        out = pd.DataFrame(index=self.index)
        out["customer_id"] = self.text(np.where(self.is_store_id, self.keys, -1))
        out["email"] = self.text(self.email_code)
        out["phone"] = self.text(self.phone_code)
        out["first_name"] = self.text(self._from_customers(f.c_first))
        out["last_name"] = self.text(self._from_customers(f.c_last))
        out["country"] = self.text(self._from_customers(f.c_country))
        out["email_consent"] = np.asarray(CONSENTS, dtype=object)[self.consent]
        has = self.order_count > 0
        out["first_order_at"] = _to_ts(self.first_ns, has)
        out["last_order_at"] = _to_ts(self.last_ns, has)
        out["order_count"] = self.order_count
        out["revenue"] = self.revenue
        out["mean_gap_days"] = self.mean_gap_days
        out["discount_share"] = self.discount_share
        out["first_channel"] = self.text(self.first_channel_code)
        out["last_engaged_at"] = _to_ts(self.engaged_ns, self.engaged_ns != _NAT)
        return out

    @cached_property
    def orders(self) -> pd.DataFrame:
        """Counted orders: ``code`` (row), ``day`` (UTC day number), ``total_micros``."""
        counted = self.order_code < self.n
        return pd.DataFrame(
            {
                "code": self.order_code[counted],
                "day": self.order_day[counted],
                "total_micros": self.order_micros[counted],
            }
        )

    def bought(self, products: tuple[str, ...], skus: tuple[str, ...], since_day: int | None) -> BoolArray:
        """Rows with a line (quantity > 0) of a counted order for one of the products/skus, on/after a day."""
        f = self.facts
        mask = np.zeros(self.n + 1, dtype=bool)
        wanted_p, wanted_s = f.strings.lookup(products), f.strings.lookup(skus)
        hit = (np.isin(f.l_product, wanted_p) | np.isin(f.l_sku, wanted_s)) & (f.l_qty > 0)
        rows = f.l_order[hit]
        if since_day is not None:
            rows = rows[f.o_ns[rows] >= since_day * NS_PER_DAY]
        if self.runs is None:
            mask[self.order_code[rows]] = True
        else:  # the run of each row: no full-length code column needed
            runs = self.runs
            rows = rows[~f.o_test[rows] & ~f.o_cancelled[rows]]
            mask[runs.row[np.searchsorted(runs.starts, rows, side="right") - 1]] = True
        return mask[: self.n]

    @cached_property
    def purchases(self) -> pd.DataFrame:
        """(customer, product_id, sku) -> last time bought, from lines of counted orders with quantity > 0."""
        f = self.facts
        codes = self.order_code[f.l_order]
        keep = (codes < self.n) & (f.l_qty > 0) & ~((f.l_product < 0) & (f.l_sku < 0))
        bought = pd.DataFrame(
            {"code": codes[keep], "product": f.l_product[keep], "sku": f.l_sku[keep], "ns": f.o_ns[f.l_order[keep]]}
        )
        result = bought.groupby(["code", "product", "sku"], sort=True)["ns"].max().reset_index()
        codes = result["code"].to_numpy(np.int64)
        return pd.DataFrame(
            {
                "code": codes,
                "customer_key": self.text(self.keys[codes]),
                "product_id": self.text(result["product"].to_numpy()),
                "sku": self.text(result["sku"].to_numpy()),
                "last_bought_at": _to_ts(result["ns"].to_numpy(np.int64), np.ones(len(result), dtype=bool)),
            }
        )


def table_from_facts(facts: Facts, *, reuse: bool = False) -> CustomerTable:
    """Key every live order (see the module doc) and aggregate per customer key, on integer codes only.

    The table does not depend on ``now``. With ``reuse`` it is kept on the facts object and returned
    again for the same object: the snapshot hands out the same facts object while nothing changed
    (and a new one after any change), so a cycle with no new data computes only the masks.
    """
    if reuse:
        kept = facts.__dict__.get("_table")
        if kept is None:
            kept = facts.__dict__["_table"] = table_from_facts(facts)
        assert isinstance(kept, CustomerTable)
        return kept
    f = facts
    cid, email = f.o_cid, f.o_email
    if f.o_groups is not None:
        if f.run_keys is None or len(f.run_keys) != len(f.o_groups):
            f.run_keys = _run_keys(f)
        return CustomerTable(f, None, f.run_keys)
    live = ~f.o_test & ((cid >= 0) | (email >= 0))  # orders with neither id nor email are excluded
    key = np.where(live, cid, -1).astype(np.int64)
    guest = live & (cid < 0)
    if guest.any():
        guest_email = email[guest]
        key[guest] = _guest_keys(f, live, guest_email)
    return CustomerTable(facts, live, key)


def forget_table(facts: Facts) -> None:
    """Drop the table :func:`table_from_facts` kept on ``facts`` (``reuse``). Facts and table refer
    to each other, a cycle that only the garbage collector frees, so facts let go of without this
    would keep both (~0.5 GB at 1M customers / 10M orders) until its next full collection."""
    facts.__dict__.pop("_table", None)


def _guest_keys(f: Facts, live: BoolArray, guest_email: npt.NDArray[np.integer[Any]]) -> IntArray:
    """Key codes of guest orders' emails: the smallest customer id with that email (customers' emails
    first, then registered live orders'), else the email itself."""
    cid, email = f.o_cid, f.o_email
    rank = f.strings.rank()
    big = np.iinfo(np.int64).max
    best = np.full(len(f.strings), big, dtype=np.int64)
    with_email = f.c_email >= 0
    np.minimum.at(best, f.c_email[with_email], rank[f.c_id[with_email]])  # smallest id wins
    known = best < big
    pairs = live & (cid >= 0) & (email >= 0)
    pairs &= ~known[np.maximum(email, 0)]
    np.minimum.at(best, email[pairs], rank[cid[pairs]])
    mapped = best[guest_email]
    out: IntArray = np.where(mapped < big, f.strings.order[np.minimum(mapped, len(f.strings) - 1)], guest_email)
    return out


def _run_keys(f: Facts) -> IntArray:
    """Key code of every run of grouped orders (-1: excluded, i.e. test orders only or no id and no email)."""
    assert f.o_groups is not None
    starts = f.o_groups
    live_runs = np.add.reduceat((~f.o_test).view(np.int8), starts, dtype=np.int64) > 0 if len(starts) else starts > 0
    cid, email = f.o_cid[starts].astype(np.int64), f.o_email[starts].astype(np.int64)
    key = np.where(live_runs, cid, -1)
    guest = live_runs & (cid < 0) & (email >= 0)
    if guest.any():
        live = ~f.o_test & ((f.o_cid >= 0) | (f.o_email >= 0))
        key[guest] = _guest_keys(f, live, email[guest])
    return key


def build_customer_table(
    orders: pd.DataFrame, customers: pd.DataFrame, lines: pd.DataFrame | None = None
) -> CustomerTable:
    """Aggregate orders (and optional order lines) per customer key; see the module doc for the rules."""
    orders = validate_orders(orders)
    customers = validate_customers(customers)
    lines = validate_lines(lines if lines is not None else empty_lines())
    return table_from_facts(facts_from_frames(orders, customers, lines))
