"""The customer table: one row per customer key, built from orders and customers with groupby.

Key resolution, per order (test orders are dropped first):
1. the order's ``customer_id`` when it has one;
2. a guest order whose email matches a customer's email takes that customer's id. Emails come from
   the customers frame first, then from registered orders (so the CSV path merges too); an email
   shared by several ids goes to the smallest id;
3. else the normalized email; orders with neither id nor email are excluded.

Counted orders are the non-cancelled, non-test ones; only they enter counts, revenue and dates. A
fully refunded order (current total 0) is still a counted order, with revenue 0. Day arithmetic is in
whole UTC calendar days. Money is summed in integer micro-units, so results do not depend on row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.records import Consent
from worker.segments.frames import empty_lines, validate_customers, validate_lines, validate_orders

NS_PER_DAY = 86_400 * 10**9
MICROS = 1_000_000

IntArray = npt.NDArray[np.int64]

#: columns of :attr:`CustomerTable.frame`, indexed by ``customer_key`` (sorted, unique)
TABLE_COLUMNS = (
    "customer_id",  # store id, NA for keys that are only an email (guests)
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "email_consent",  # a Consent value
    "first_order_at",  # first counted order, UTC (NaT without counted orders)
    "last_order_at",
    "order_count",  # counted orders
    "revenue",  # sum of current totals of counted orders
    "mean_gap_days",  # (last - first order UTC day) / (order_count - 1); NaN below 2 orders
    "discount_share",  # share of counted orders with a discount; NaN without counted orders
    "first_channel",  # channel of the first counted order
    "last_engaged_at",  # last email open/click from the customers frame
)


@dataclass(frozen=True, eq=False)
class CustomerTable:
    """Per-customer aggregates plus the compact order and purchase data windowed rules need.

    ``orders``: counted orders as ``code`` (row position in ``frame``), ``day`` (UTC day number since
    1970-01-01) and ``total_micros`` (int64). ``purchases``: one row per (customer, product_id, sku)
    with ``code``, ``customer_key``, ``product_id``, ``sku``, ``last_bought_at``.
    """

    frame: pd.DataFrame
    orders: pd.DataFrame
    purchases: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def index(self) -> pd.Index:
        return self.frame.index


def _ns(series: pd.Series) -> IntArray:
    """UTC timestamps as int64 nanoseconds (NaT becomes the int64 minimum)."""
    naive = series.dt.tz_convert("UTC").dt.tz_localize(None)
    ns: IntArray = naive.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ns


def _to_ts(ns: IntArray, valid: npt.NDArray[np.bool_]) -> pd.DatetimeIndex:
    values = np.where(valid, ns, np.iinfo(np.int64).min).view("datetime64[ns]")
    return pd.DatetimeIndex(values).tz_localize("UTC")


def _extreme_rows(
    codes: IntArray, ns: IntArray, order_ids: npt.NDArray[np.object_], n: int, *, latest: bool
) -> tuple[IntArray, IntArray]:
    """(code, row) of each code's earliest/latest row by (created_at, order_id), deterministic."""
    if len(codes) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    grouped = pd.Series(ns).groupby(codes)
    ext = (grouped.max() if latest else grouped.min()).reindex(range(n), fill_value=0).to_numpy(np.int64)
    cand = np.flatnonzero(ns == ext[codes])
    pick = pd.DataFrame({"code": codes[cand], "oid": order_ids[cand], "row": cand})
    pick = pick.sort_values(["code", "oid"], ascending=[True, not latest], kind="stable")
    pick = pick.drop_duplicates("code")
    return pick["code"].to_numpy(np.int64), pick["row"].to_numpy(np.int64)


def _fill_from_orders(
    target: pd.Series,
    values: pd.Series,
    codes: IntArray,
    ns: IntArray,
    oids: npt.NDArray[np.object_],
    n: int,
) -> pd.Series:
    """Fill missing ``target`` entries with the value on each key's latest order that has one."""
    has = values.notna().to_numpy()
    c, rows = _extreme_rows(codes[has], ns[has], oids[has], n, latest=True)
    latest = pd.Series(pd.NA, index=range(n), dtype="object")
    latest.iloc[c] = values.to_numpy(dtype=object)[has][rows]
    out = target.astype("object").where(target.notna(), latest.to_numpy())
    return out.astype("str").where(out.notna())


def _resolve_keys(orders: pd.DataFrame, customers: pd.DataFrame) -> pd.Series:
    cid, email = orders["customer_id"], orders["email"]
    known = customers.loc[customers["email"].notna(), ["email", "customer_id"]]
    registered = orders.loc[cid.notna() & email.notna(), ["email", "customer_id"]]
    registered = registered[~registered["email"].isin(known["email"])]
    mapping = (
        pd.concat([known, registered])
        .sort_values(["email", "customer_id"], kind="stable")
        .drop_duplicates("email")
        .set_index("email")["customer_id"]
    )
    key = cid.where(cid.notna(), email.map(mapping))
    return key.where(key.notna(), email)


def build_customer_table(
    orders: pd.DataFrame, customers: pd.DataFrame, lines: pd.DataFrame | None = None
) -> CustomerTable:
    """Aggregate orders (and optional order lines) per customer key; see the module doc for the rules."""
    orders = validate_orders(orders)
    customers = validate_customers(customers)
    lines = validate_lines(lines if lines is not None else empty_lines())

    orders = orders[~orders["test"].to_numpy()]
    orders = orders.assign(key=_resolve_keys(orders, customers))
    orders = orders[orders["key"].notna().to_numpy()].reset_index(drop=True)

    all_keys = np.concatenate(
        [customers["customer_id"].to_numpy(dtype=object), orders["key"].to_numpy(dtype=object)]
    )
    keys = pd.Index(pd.unique(all_keys)).sort_values().astype("str")
    keys.name = "customer_key"
    n = len(keys)
    codes = keys.get_indexer(orders["key"]).astype(np.int64)
    ns = _ns(orders["created_at"])
    oids = orders["order_id"].to_numpy(dtype=object)

    # identity and consent: the customers frame, completed from each key's latest orders
    frame = customers.set_index("customer_id").reindex(keys)
    in_customers = keys.isin(customers["customer_id"])
    # a key not in the customers frame is a store id when some order carried it as customer_id
    ids_on_orders = pd.Index(orders["customer_id"].dropna().unique())
    cust_col = pd.Series(
        np.where(in_customers | keys.isin(ids_on_orders), keys.to_numpy(dtype=object), None),
        index=keys,
        dtype="str",
    )
    out = pd.DataFrame(index=keys)
    out["customer_id"] = cust_col
    email = frame["email"].reset_index(drop=True)
    email = email.where(email.notna() | cust_col.notna().to_numpy(), pd.Series(keys))
    out["email"] = _fill_from_orders(email, orders["email"], codes, ns, oids, n).to_numpy()
    phone = frame["phone"].reset_index(drop=True)
    if "phone" in orders.columns:
        phone = _fill_from_orders(phone, orders["phone"], codes, ns, oids, n)
    out["phone"] = phone.to_numpy()
    for column in ("first_name", "last_name", "country"):
        out[column] = frame[column].to_numpy()
    for column in ("email", "phone", "first_name", "last_name", "country"):
        out[column] = out[column].astype("str").where(out[column].notna())

    consent = frame["email_consent"].to_numpy(dtype=object)
    consent = np.where(in_customers, consent, Consent.UNKNOWN.value)
    if "accepts_marketing" in orders.columns and len(orders):
        c, rows = _extreme_rows(codes, ns, oids, n, latest=True)
        accepted = orders["accepts_marketing"].fillna(False).to_numpy(dtype=bool)[rows]
        subscribed = np.zeros(n, dtype=bool)
        subscribed[c] = accepted
        consent = np.where(~in_customers & subscribed, Consent.SUBSCRIBED.value, consent)
    out["email_consent"] = pd.Series(consent, index=keys, dtype="str")

    # purchase aggregates over counted orders
    counted = ~orders["cancelled"].to_numpy()
    c_codes, c_ns = codes[counted], ns[counted]
    micros = np.round(orders["total"].to_numpy(np.float64)[counted] * MICROS).astype(np.int64)
    count = np.bincount(c_codes, minlength=n).astype(np.int64)
    revenue_micros = _group_sum(c_codes, micros, n)
    grouped = pd.Series(c_ns).groupby(c_codes)
    first_i = grouped.min().reindex(range(n), fill_value=0).to_numpy(np.int64)
    last_i = grouped.max().reindex(range(n), fill_value=0).to_numpy(np.int64)
    has_orders = count > 0
    out["first_order_at"] = _to_ts(first_i, has_orders)
    out["last_order_at"] = _to_ts(last_i, has_orders)
    out["order_count"] = count
    out["revenue"] = revenue_micros / MICROS
    span_days = (last_i // NS_PER_DAY - first_i // NS_PER_DAY).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mean_gap_days"] = np.where(count >= 2, span_days / np.maximum(count - 1, 1), np.nan)
        discounted = np.bincount(
            c_codes, weights=orders["has_discount"].to_numpy(bool)[counted].astype(np.float64), minlength=n
        )
        out["discount_share"] = np.where(has_orders, discounted / np.maximum(count, 1), np.nan)
    first_channel = pd.Series(pd.NA, index=range(n), dtype="object")
    c, rows = _extreme_rows(c_codes, c_ns, oids[counted], n, latest=False)
    first_channel.iloc[c] = orders["channel"].to_numpy(dtype=object)[counted][rows]
    out["first_channel"] = first_channel.astype("str").where(first_channel.notna()).to_numpy()
    out["last_engaged_at"] = frame["last_engaged_at"].dt.as_unit("ns")

    compact = pd.DataFrame({"code": c_codes, "day": c_ns // NS_PER_DAY, "total_micros": micros})
    purchases = _purchases(orders[counted].reset_index(drop=True), c_codes, lines, keys)
    return CustomerTable(frame=out, orders=compact, purchases=purchases)


def _group_sum(codes: IntArray, values: IntArray, n: int) -> IntArray:
    """Exact int64 sums per code (order-independent, unlike float sums)."""
    return pd.Series(values).groupby(codes).sum().reindex(range(n), fill_value=0).to_numpy(np.int64)


def _purchases(counted: pd.DataFrame, codes: IntArray, lines: pd.DataFrame, keys: pd.Index) -> pd.DataFrame:
    pos = pd.Index(counted["order_id"]).get_indexer(lines["order_id"])
    keep = (pos >= 0) & (lines["quantity"].to_numpy() > 0)
    keep &= (lines["product_id"].notna() | lines["sku"].notna()).to_numpy()
    pos = pos[keep]
    bought = pd.DataFrame(
        {
            "code": codes[pos],
            "product_id": lines["product_id"].to_numpy(dtype=object)[keep],
            "sku": lines["sku"].to_numpy(dtype=object)[keep],
            "last_bought_at": counted["created_at"].to_numpy()[pos],
        }
    )
    bought["last_bought_at"] = pd.to_datetime(bought["last_bought_at"], utc=True)
    result = (
        bought.groupby(["code", "product_id", "sku"], dropna=False, sort=True)["last_bought_at"]
        .max()
        .reset_index()
    )
    result.insert(1, "customer_key", keys.to_numpy(dtype=object)[result["code"].to_numpy(np.int64)])
    for column in ("customer_key", "product_id", "sku"):
        result[column] = result[column].astype("str").where(result[column].notna())
    return result
