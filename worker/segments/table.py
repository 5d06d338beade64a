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
BoolArray = npt.NDArray[np.bool_]
_NAT = np.iinfo(np.int64).min

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
    values = np.where(valid, ns, _NAT).view("datetime64[ns]")
    return pd.DatetimeIndex(values).tz_localize("UTC")


def _extreme_rows(
    codes: IntArray, ns: IntArray, order_ids: ObjArray, n: int, *, latest: bool
) -> tuple[IntArray, IntArray]:
    """(code, row) of each code's earliest/latest row by (created_at, order_id), deterministic."""
    if len(codes) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ext = group_extreme(codes, ns, n, latest=latest)
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


def _latest_value(values: ObjArray, has: BoolArray, codes: IntArray, ns: IntArray, oids: ObjArray, n: int) -> ObjArray:
    """Per code, the value on its latest row where ``has`` (None where there is no such row)."""
    c, rows = _extreme_rows(codes[has], ns[has], oids[has], n, latest=True)
    out = np.full(n, None, dtype=object)
    out[c] = values[has][rows]
    return out


def _resolve_keys(
    cid: ObjArray, email: ObjArray, guest: BoolArray, registered: BoolArray, customers: pd.DataFrame
) -> ObjArray:
    """Customer key per order row: the id, else the id of a customer with that email, else the email."""
    key = cid.copy()
    if not guest.any():
        return key
    guest_emails = pd.Series(email[guest], dtype=object)
    known = customers.loc[customers["email"].notna(), ["email", "customer_id"]].astype(object)
    wanted = pd.Index(guest_emails.unique()).difference(pd.Index(known["email"]))
    pairs = pd.DataFrame({"email": email[registered], "customer_id": cid[registered]}, dtype=object)
    pairs = pairs[pairs["email"].isin(wanted).to_numpy()]
    mapping = (
        pd.concat([known, pairs])
        .sort_values(["email", "customer_id"], kind="stable")
        .drop_duplicates("email")
        .set_index("email")["customer_id"]
    )
    mapped = guest_emails.map(mapping).to_numpy(dtype=object)
    key[guest] = np.where(pd.isna(mapped), email[guest], mapped)
    return key


def _none_for_na(values: ObjArray) -> ObjArray:
    """Missing strings as ``None`` (one spelling of missing in the table's object columns)."""
    out = values.astype(object)
    out[pd.isna(out)] = None
    return out


def _sorted_codes(customer_ids: ObjArray, order_keys: ObjArray) -> tuple[ObjArray, IntArray, IntArray]:
    """Sorted unique keys, and the position in them of every customer row and every order row."""
    codes, uniques = pd.factorize(np.concatenate([customer_ids, order_keys]))
    uniques = np.asarray(uniques, dtype=object)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    positions = rank[codes]
    return uniques[order], positions[: len(customer_ids)], positions[len(customer_ids) :]


def build_customer_table(
    orders: pd.DataFrame, customers: pd.DataFrame, lines: pd.DataFrame | None = None
) -> CustomerTable:
    """Aggregate orders (and optional order lines) per customer key; see the module doc for the rules."""
    orders = validate_orders(orders)
    customers = validate_customers(customers)
    lines = validate_lines(lines if lines is not None else empty_lines())

    cid = orders["customer_id"].to_numpy(dtype=object)
    email = orders["email"].to_numpy(dtype=object)
    cid_ok, email_ok = ~pd.isna(cid), ~pd.isna(email)
    live = ~orders["test"].to_numpy(dtype=bool)
    key = _resolve_keys(cid, email, live & ~cid_ok & email_ok, live & cid_ok & email_ok, customers)
    rows = np.flatnonzero(live & (cid_ok | email_ok))  # orders with neither are excluded

    def column(name: str) -> ObjArray:
        values: ObjArray = orders[name].to_numpy(dtype=object)[rows]
        return values

    cid, email, cid_ok, email_ok, key = cid[rows], email[rows], cid_ok[rows], email_ok[rows], key[rows]
    oids = column("order_id")
    ns = _ns(orders["created_at"])[rows]
    cust_ids = customers["customer_id"].to_numpy(dtype=object)
    keys, cust_pos, codes = _sorted_codes(cust_ids, key)
    n = len(keys)
    index = pd.Index(keys, name="customer_key", dtype=object)
    in_customers = np.zeros(n, dtype=bool)
    in_customers[cust_pos] = True
    is_store_id = in_customers.copy()
    is_store_id[codes[cid_ok]] = True

    def from_customers(name: str) -> ObjArray:
        out = np.full(n, None, dtype=object)
        out[cust_pos] = _none_for_na(customers[name].to_numpy(dtype=object))
        return out

    out = pd.DataFrame(index=index)
    out["customer_id"] = _none_for_na(np.where(is_store_id, keys, np.nan))
    known_email = np.where(is_store_id, from_customers("email"), keys)  # a guest key is its email
    missing = pd.isna(known_email)
    if missing.any():
        latest = _latest_value(email, email_ok, codes, ns, oids, n)
        known_email = np.where(missing, latest, known_email)
    out["email"] = known_email
    phone = from_customers("phone")
    if "phone" in orders.columns and pd.isna(phone).any():
        order_phone = column("phone")
        latest = _latest_value(order_phone, ~pd.isna(order_phone), codes, ns, oids, n)
        phone = np.where(pd.isna(phone), latest, phone)
    out["phone"] = phone
    for name in ("first_name", "last_name", "country"):
        out[name] = from_customers(name)

    consent = np.where(in_customers, from_customers("email_consent"), Consent.UNKNOWN.value)
    if "accepts_marketing" in orders.columns and len(rows):
        c, latest_rows = _extreme_rows(codes, ns, oids, n, latest=True)
        accepts = orders["accepts_marketing"].fillna(False).to_numpy(dtype=bool)[rows]
        subscribed = np.zeros(n, dtype=bool)
        subscribed[c] = accepts[latest_rows]
        consent = np.where(~in_customers & subscribed, Consent.SUBSCRIBED.value, consent)
    out["email_consent"] = consent

    # purchase aggregates over counted orders
    counted = ~orders["cancelled"].to_numpy(dtype=bool)[rows]
    c_codes, c_ns, c_oids = codes[counted], ns[counted], oids[counted]
    micros = np.round(orders["total"].to_numpy(np.float64)[rows][counted] * MICROS).astype(np.int64)
    count = np.bincount(c_codes, minlength=n).astype(np.int64)
    has_orders = count > 0
    first_i = np.where(has_orders, group_extreme(c_codes, c_ns, n, latest=False), 0)
    last_i = np.where(has_orders, group_extreme(c_codes, c_ns, n, latest=True), 0)
    out["first_order_at"] = _to_ts(first_i, has_orders)
    out["last_order_at"] = _to_ts(last_i, has_orders)
    out["order_count"] = count
    out["revenue"] = group_sum(c_codes, micros, n) / MICROS
    span_days = (last_i // NS_PER_DAY - first_i // NS_PER_DAY).astype(np.float64)
    out["mean_gap_days"] = np.where(count >= 2, span_days / np.maximum(count - 1, 1), np.nan)
    discount = orders["has_discount"].to_numpy(dtype=bool)[rows][counted]
    discounted = np.bincount(c_codes, weights=discount, minlength=n)
    out["discount_share"] = np.where(has_orders, discounted / np.maximum(count, 1), np.nan)
    first_channel = np.full(n, None, dtype=object)
    c, first_rows = _extreme_rows(c_codes, c_ns, c_oids, n, latest=False)
    channel = column("channel")[counted][first_rows]
    first_channel[c] = _none_for_na(channel)
    out["first_channel"] = first_channel
    engaged = np.full(n, _NAT, dtype=np.int64)
    engaged[cust_pos] = _ns(customers["last_engaged_at"])
    out["last_engaged_at"] = _to_ts(engaged, engaged != _NAT)

    compact = pd.DataFrame({"code": c_codes, "day": c_ns // NS_PER_DAY, "total_micros": micros})
    purchases = _purchases(c_oids, c_codes, c_ns, lines, keys)
    return CustomerTable(frame=out, orders=compact, purchases=purchases)


def group_sum(codes: IntArray, values: IntArray, n: int) -> IntArray:
    """Exact int64 sums per code (order-independent, unlike float sums); ``ufunc.at`` beats groupby."""
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, codes, values)
    return out


def group_extreme(codes: IntArray, values: IntArray, n: int, *, latest: bool) -> IntArray:
    """Max (``latest``) or min per code; codes without rows get the int64 min / max."""
    if latest:
        out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(out, codes, values)
    else:
        out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(out, codes, values)
    return out


def _purchases(oids: ObjArray, codes: IntArray, ns: IntArray, lines: pd.DataFrame, keys: ObjArray) -> pd.DataFrame:
    """(customer, product_id, sku) -> last time bought, from lines of counted orders with quantity > 0."""
    columns = ["code", "customer_key", "product_id", "sku", "last_bought_at"]
    if len(lines) == 0 or len(oids) == 0:
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
        empty["code"] = empty["code"].astype(np.int64)
        empty["last_bought_at"] = pd.Series([], dtype="datetime64[ns, UTC]")
        return empty
    pos = pd.Index(oids).get_indexer(pd.Index(lines["order_id"].to_numpy(dtype=object)))
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
            "customer_key": keys[result_codes],
            "product_id": result["product_id"].astype(object).where(result["product_id"].notna(), None),
            "sku": result["sku"].astype(object).where(result["sku"].notna(), None),
            "last_bought_at": _to_ts(result["ns"].to_numpy(np.int64), np.ones(len(result), dtype=bool)),
        }
    )
