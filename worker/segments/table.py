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
ObjArray = npt.NDArray[np.object_]

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
    codes: IntArray, ns: IntArray, order_ids: ObjArray, n: int, *, latest: bool
) -> tuple[IntArray, IntArray]:
    """(code, row) of each code's earliest/latest row by (created_at, order_id), deterministic."""
    if len(codes) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    grouped = pd.Series(ns).groupby(codes)
    ext = (grouped.max() if latest else grouped.min()).reindex(range(n), fill_value=0).to_numpy(np.int64)
    cand = np.flatnonzero(ns == ext[codes])
    cand_codes = codes[cand]
    tied = np.bincount(cand_codes, minlength=n)[cand_codes] > 1
    if tied.any():  # same timestamp: order_id decides (rare, so the string sort stays small)
        pick = pd.DataFrame({"code": cand_codes[tied], "oid": order_ids[cand[tied]], "row": cand[tied]})
        pick = pick.sort_values(["code", "oid"], ascending=[True, not latest], kind="stable")
        pick = pick.drop_duplicates("code")
        cand = np.concatenate([cand[~tied], pick["row"].to_numpy(np.int64)])
        cand_codes = codes[cand]
    return cand_codes, cand


def _latest_value(values: ObjArray, codes: IntArray, ns: IntArray, oids: ObjArray, n: int) -> ObjArray:
    """Per code, the value on its latest row that has one (None where no row has one)."""
    has = ~pd.isna(values)
    c, rows = _extreme_rows(codes[has], ns[has], oids[has], n, latest=True)
    out = np.full(n, None, dtype=object)
    out[c] = values[has][rows]
    return out


def _resolve_keys(cid: ObjArray, email: ObjArray, customers: pd.DataFrame) -> ObjArray:
    """Customer key per order row (None where the order has neither id nor email)."""
    key = cid.copy()
    guest = pd.isna(cid) & ~pd.isna(email)
    if not guest.any():
        return key
    guest_emails = pd.Series(email[guest], dtype=object)
    known = customers.loc[customers["email"].notna(), ["email", "customer_id"]]
    registered = ~pd.isna(cid) & ~pd.isna(email)
    wanted = pd.Index(guest_emails.unique()).difference(pd.Index(known["email"]))
    pairs = pd.DataFrame({"email": email[registered], "customer_id": cid[registered]}, dtype=object)
    pairs = pairs[pairs["email"].isin(wanted).to_numpy()]
    mapping = (
        pd.concat([known.astype(object), pairs])
        .sort_values(["email", "customer_id"], kind="stable")
        .drop_duplicates("email")
        .set_index("email")["customer_id"]
    )
    mapped = guest_emails.map(mapping).to_numpy(dtype=object)
    key[guest] = np.where(pd.isna(mapped), email[guest], mapped)
    return key


def _sorted_codes(customer_ids: ObjArray, order_keys: ObjArray) -> tuple[ObjArray, IntArray, IntArray]:
    """Sorted unique keys, and the position in them of every customer row and every order row."""
    codes, uniques = pd.factorize(np.concatenate([customer_ids, order_keys]))
    uniques = np.asarray(uniques, dtype=object)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    positions = rank[codes]
    return uniques[order], positions[: len(customer_ids)], positions[len(customer_ids) :]


def _str_column(values: ObjArray, index: pd.Index) -> pd.Series:
    return pd.Series(values, index=index, dtype=object).astype("str").where(~pd.isna(values))


def build_customer_table(
    orders: pd.DataFrame, customers: pd.DataFrame, lines: pd.DataFrame | None = None
) -> CustomerTable:
    """Aggregate orders (and optional order lines) per customer key; see the module doc for the rules."""
    orders = validate_orders(orders)
    customers = validate_customers(customers)
    lines = validate_lines(lines if lines is not None else empty_lines())

    live = ~orders["test"].to_numpy(dtype=bool)
    cid = orders["customer_id"].to_numpy(dtype=object)[live]
    key = _resolve_keys(cid, orders["email"].to_numpy(dtype=object)[live], customers)
    keep = np.flatnonzero(live)[~pd.isna(key)]
    key = key[~pd.isna(key)]
    orders = orders.iloc[keep].reset_index(drop=True)
    cid = orders["customer_id"].to_numpy(dtype=object)
    oids = orders["order_id"].to_numpy(dtype=object)
    ns = _ns(orders["created_at"])

    keys, cust_pos, codes = _sorted_codes(customers["customer_id"].to_numpy(dtype=object), key)
    n = len(keys)
    index = pd.Index(keys, name="customer_key", dtype="str")
    in_customers = np.zeros(n, dtype=bool)
    in_customers[cust_pos] = True
    is_store_id = in_customers.copy()
    is_store_id[codes[~pd.isna(cid)]] = True

    def from_customers(column: str) -> ObjArray:
        out = np.full(n, None, dtype=object)
        out[cust_pos] = customers[column].to_numpy(dtype=object)
        return out

    out = pd.DataFrame(index=index)
    out["customer_id"] = _str_column(np.where(is_store_id, keys, None), index)
    email = from_customers("email")
    email = np.where(is_store_id, email, keys)  # a guest key is its email
    missing = pd.isna(email)
    if missing.any():
        email = np.where(missing, _latest_value(orders["email"].to_numpy(dtype=object), codes, ns, oids, n), email)
    out["email"] = _str_column(email, index)
    phone = from_customers("phone")
    if "phone" in orders.columns and pd.isna(phone).any():
        latest_phone = _latest_value(orders["phone"].to_numpy(dtype=object), codes, ns, oids, n)
        phone = np.where(pd.isna(phone), latest_phone, phone)
    out["phone"] = _str_column(phone, index)
    for column in ("first_name", "last_name", "country"):
        out[column] = _str_column(from_customers(column), index)

    consent = np.where(in_customers, from_customers("email_consent"), Consent.UNKNOWN.value)
    if "accepts_marketing" in orders.columns and len(orders):
        c, rows = _extreme_rows(codes, ns, oids, n, latest=True)
        subscribed = np.zeros(n, dtype=bool)
        subscribed[c] = orders["accepts_marketing"].fillna(False).to_numpy(dtype=bool)[rows]
        consent = np.where(~in_customers & subscribed, Consent.SUBSCRIBED.value, consent)
    out["email_consent"] = pd.Series(consent, index=index, dtype="str")

    # purchase aggregates over counted orders
    counted = ~orders["cancelled"].to_numpy(dtype=bool)
    c_codes, c_ns, c_oids = codes[counted], ns[counted], oids[counted]
    micros = np.round(orders["total"].to_numpy(np.float64)[counted] * MICROS).astype(np.int64)
    count = np.bincount(c_codes, minlength=n).astype(np.int64)
    has_orders = count > 0
    grouped = pd.Series(c_ns).groupby(c_codes)
    first_i = grouped.min().reindex(range(n), fill_value=0).to_numpy(np.int64)
    last_i = grouped.max().reindex(range(n), fill_value=0).to_numpy(np.int64)
    out["first_order_at"] = _to_ts(first_i, has_orders)
    out["last_order_at"] = _to_ts(last_i, has_orders)
    out["order_count"] = count
    out["revenue"] = _group_sum(c_codes, micros, n) / MICROS
    span_days = (last_i // NS_PER_DAY - first_i // NS_PER_DAY).astype(np.float64)
    out["mean_gap_days"] = np.where(count >= 2, span_days / np.maximum(count - 1, 1), np.nan)
    discounted = np.bincount(c_codes, weights=orders["has_discount"].to_numpy(dtype=bool)[counted], minlength=n)
    out["discount_share"] = np.where(has_orders, discounted / np.maximum(count, 1), np.nan)
    first_channel = np.full(n, None, dtype=object)
    c, rows = _extreme_rows(c_codes, c_ns, c_oids, n, latest=False)
    first_channel[c] = orders["channel"].to_numpy(dtype=object)[counted][rows]
    out["first_channel"] = _str_column(first_channel, index)
    engaged = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    engaged[cust_pos] = _ns(customers["last_engaged_at"])
    out["last_engaged_at"] = _to_ts(engaged, engaged != np.iinfo(np.int64).min)

    compact = pd.DataFrame({"code": c_codes, "day": c_ns // NS_PER_DAY, "total_micros": micros})
    purchases = _purchases(c_oids, c_codes, c_ns, lines, keys)
    return CustomerTable(frame=out, orders=compact, purchases=purchases)


def _group_sum(codes: IntArray, values: IntArray, n: int) -> IntArray:
    """Exact int64 sums per code (order-independent, unlike float sums)."""
    return pd.Series(values).groupby(codes).sum().reindex(range(n), fill_value=0).to_numpy(np.int64)


def _purchases(oids: ObjArray, codes: IntArray, ns: IntArray, lines: pd.DataFrame, keys: ObjArray) -> pd.DataFrame:
    """(customer, product_id, sku) -> last time bought, from lines of counted orders with quantity > 0."""
    columns = ["code", "customer_key", "product_id", "sku", "last_bought_at"]
    if len(lines) == 0 or len(oids) == 0:
        empty = pd.DataFrame({c: pd.Series([], dtype="str") for c in columns})
        empty["code"] = empty["code"].astype(np.int64)
        empty["last_bought_at"] = pd.Series([], dtype="datetime64[ns, UTC]")
        return empty
    pos = pd.Index(oids).get_indexer(lines["order_id"].to_numpy(dtype=object))
    product = lines["product_id"].to_numpy(dtype=object)
    sku = lines["sku"].to_numpy(dtype=object)
    keep = (pos >= 0) & (lines["quantity"].to_numpy() > 0) & ~(pd.isna(product) & pd.isna(sku))
    bought = pd.DataFrame(
        {"code": codes[pos[keep]], "product_id": product[keep], "sku": sku[keep], "ns": ns[pos[keep]]}
    )
    result = bought.groupby(["code", "product_id", "sku"], dropna=False, sort=True)["ns"].max().reset_index()
    result_codes = result["code"].to_numpy(np.int64)
    return pd.DataFrame(
        {
            "code": result_codes,
            "customer_key": pd.Series(keys[result_codes], dtype="str"),
            "product_id": result["product_id"].astype("str").where(result["product_id"].notna()),
            "sku": result["sku"].astype("str").where(result["sku"].notna()),
            "last_bought_at": _to_ts(result["ns"].to_numpy(np.int64), np.ones(len(result), dtype=bool)),
        }
    )
