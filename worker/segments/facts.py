"""Integer-coded order facts: the columnar input of the customer table, built once and kept up to date.

Every string (customer id, email, phone, channel, name, product id, sku) is interned in one
dictionary, :attr:`Facts.strings`; columns hold int32 codes into it (-1 = missing). The sort order of
the dictionary is cached (:attr:`Facts.order`), so keying customers by sorted ``customer_key`` costs
no string comparison per cycle. Test orders and key resolution are handled by the table builder, so an
order re-ingested as a test order, or a customer arriving with a guest's email, needs no re-keying here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.kernel.records import Consent

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
Bools = npt.NDArray[np.bool_]
Objs = npt.NDArray[np.object_]
NAT = np.iinfo(np.int64).min
MICROS = 1_000_000
#: consent states by code (``Facts.c_consent`` indexes this tuple)
CONSENTS: tuple[str, ...] = tuple(c.value for c in Consent)
UNKNOWN_CONSENT = CONSENTS.index(Consent.UNKNOWN.value)
#: without a hash index, :meth:`Interner.codes` binary-searches batches this many times smaller than
#: the dictionary (a cycle's new rows); larger ones (a full load) build the index
SEARCH_BELOW = 16

ORDER_ARRAYS = ("o_cid", "o_email", "o_ns", "o_micros", "o_cancelled", "o_test", "o_discount")
ORDER_ARRAYS_2 = ("o_channel", "o_accepts", "o_phone")
CUSTOMER_ARRAYS = ("c_id", "c_email", "c_phone", "c_first", "c_last", "c_country", "c_consent", "c_engaged_ns")
LINE_ARRAYS = ("l_order", "l_product", "l_sku", "l_qty")


class Interner:
    """Append-only string dictionary with a cached sort order (merged, not re-sorted, on growth)."""

    def __init__(self, strings: Sequence[str] = (), order: I64 | None = None) -> None:
        self.strings: list[str] = list(strings)
        self._index: dict[str, int] | None = None
        self._order = order
        self._sorted: Objs | None = None
        self._array: Objs | None = None
        #: strings interned by binary-search lookups since ``_sorted`` was built, by code
        self._recent: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.strings)

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.strings)}
        return self._index

    def release_index(self) -> None:
        """Drop the hash index (~130 MB at 2M strings): small lookups then binary-search the sorted
        order instead (strings added since that sort sit in a small dict), and a large batch (a full
        load) builds the index again."""
        self._index = None

    def _search(self, texts: list[str]) -> I64:
        """Codes of ``texts`` (-1 where unknown): binary search over the strings as last sorted, then
        the strings interned since (``_recent``)."""
        n = len(self.strings)
        if self._sorted is None or len(self._sorted) + len(self._recent) != n:
            self._sorted = self.array()[self.order]  # ``order`` merges strings added since the last sort
            self._recent = {}
        sorted_strings, order = self._sorted, self._order
        assert order is not None and len(order) == len(sorted_strings)
        out = np.full(len(texts), -1, dtype=np.int64)
        if len(sorted_strings) and texts:
            wanted = np.asarray(texts, dtype=object)
            at = np.minimum(np.searchsorted(sorted_strings, wanted), len(sorted_strings) - 1)
            hit = np.asarray(sorted_strings[at] == wanted, dtype=bool)
            out[hit] = order[at[hit]]
        if self._recent:
            for i in np.flatnonzero(out < 0).tolist():
                out[i] = self._recent.get(texts[i], -1)
        return out

    def codes(self, values: Iterable[object]) -> I32:
        """Codes of ``values`` (None/NaN -> -1), interning unseen strings."""
        if self._index is None:
            items = [None if v is None or v != v else str(v) for v in values]
            if len(items) * SEARCH_BELOW < len(self.strings):
                return self._codes_by_search(items)
            values = items
        index, strings = self.index, self.strings
        out: list[int] = []
        append = out.append
        for value in values:
            if value is None or value != value:  # None, NaN, NA-likes
                append(-1)
                continue
            text = str(value)
            code = index.get(text)
            if code is None:
                code = index[text] = len(strings)
                strings.append(text)
            append(code)
        return np.asarray(out, dtype=np.int32)

    def _codes_by_search(self, items: list[str | None]) -> I32:
        texts = [t for t in items if t is not None]
        found = self._search(texts).tolist()
        recent, strings = self._recent, self.strings
        out = np.full(len(items), -1, dtype=np.int32)
        k = 0
        for i, text in enumerate(items):
            if text is None:
                continue
            code = found[k]
            k += 1
            if code < 0:
                code = recent.get(text, -1)
                if code < 0:
                    code = recent[text] = len(strings)
                    strings.append(text)
            out[i] = code
        return out

    def factorize(self, values: npt.ArrayLike) -> I32:
        """Like :meth:`codes` for a large column: factorize first, intern only the distinct values."""
        local, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), use_na_sentinel=True)
        if len(uniques) == 0:
            return np.full(len(local), -1, dtype=np.int32)
        mapping = np.append(self.codes(np.asarray(uniques, dtype=object)), np.int32(-1))
        return mapping[local].astype(np.int32)

    def lookup(self, values: Iterable[str]) -> I32:
        """Codes of known strings only (unknown ones are left out)."""
        if self._index is None:
            found = self._search(list(values))
            return found[found >= 0].astype(np.int32)
        index = self.index
        return np.asarray([index[v] for v in values if v in index], dtype=np.int32)

    def array(self) -> Objs:
        """The strings as an object array with a trailing None, so code -1 reads as missing."""
        if self._array is None or len(self._array) != len(self.strings) + 1:
            self._array = np.asarray([*self.strings, None], dtype=object)
        return self._array

    @property
    def order(self) -> I64:
        """Codes sorted by their string (stable, code order among equals: there are none)."""
        n = len(self.strings)
        if self._order is None:
            self._order = np.argsort(np.asarray(self.strings, dtype=object), kind="stable").astype(np.int64)
            self._sorted = None
        elif len(self._order) < n:  # merge the new strings into the cached order
            old = self._order
            new = np.arange(len(old), n, dtype=np.int64)
            new_strings = np.asarray(self.strings[len(old) :], dtype=object)
            new = new[np.argsort(new_strings, kind="stable")]
            if self._sorted is None or len(self._sorted) != len(old):
                self._sorted = np.asarray(self.strings, dtype=object)[old]
            at = np.searchsorted(self._sorted, np.asarray(self.strings, dtype=object)[new], side="right")
            self._order = np.insert(old, at, new)
            self._sorted = None
        return self._order

    def rank(self) -> I64:
        """Position of each code in the sorted order."""
        order = self.order
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order), dtype=np.int64)
        return rank


#: order ids of order references (``Facts.o_ref``); read only to break ties between orders
OrderIdLookup = Callable[[I64], list[str]]


class IdsInMemory:
    """:data:`OrderIdLookup` over ids held in memory, referenced by position."""

    def __init__(self, ids: npt.ArrayLike) -> None:
        self.ids = np.asarray(ids, dtype=object)

    def __call__(self, refs: I64) -> list[str]:
        out: list[str] = self.ids[refs].tolist()
        return out


@dataclass(eq=False)
class Facts:
    """Orders, customers and order lines as code columns (see the module doc).

    Orders: ``o_ref`` (the number each order's id is found by through ``id_lookup``: the store's row
    number in a snapshot; ids break ties only, so 10M id strings are not held), ``o_cid``/``o_email``/``o_phone``/
    ``o_channel`` codes, ``o_ns`` (created_at, UTC ns), ``o_micros`` (current total in micro-units),
    ``o_cancelled``/``o_test``/``o_discount`` flags, ``o_accepts`` (-1 unknown, 0, 1). Customers:
    ``c_*`` codes, ``c_consent`` (index into :data:`CONSENTS`), ``c_engaged_ns`` (NAT if never). Lines:
    ``l_order`` (row in the order columns), ``l_product``/``l_sku`` codes, ``l_qty``.
    """

    strings: Interner
    id_lookup: OrderIdLookup
    o_ref: I64
    o_cid: I32
    o_email: I32
    o_ns: I64
    o_micros: I64
    o_cancelled: Bools
    o_test: Bools
    o_discount: Bools
    o_channel: I32
    o_accepts: I8
    o_phone: I32
    c_id: I32
    c_email: I32
    c_phone: I32
    c_first: I32
    c_last: I32
    c_country: I32
    c_consent: I8
    c_engaged_ns: I64
    l_order: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    l_product: I32 = field(default_factory=lambda: np.empty(0, np.int32))
    l_sku: I32 = field(default_factory=lambda: np.empty(0, np.int32))
    l_qty: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    #: when set, the order columns are sorted by :func:`group_key` and this holds the first row of each
    #: run of equal keys (one run per registered customer id, one per guest email): the table then
    #: reduces orders with sequential ``reduceat`` passes instead of scatters (see :func:`grouped`)
    o_groups: I64 | None = None
    #: grouped path: the key code of every run (key resolution), kept here by the table builder; the
    #: snapshot carries it into the next facts when a refresh changed no input of it (see
    #: ``worker/store/snapshot.py``), so such a cycle does not resolve keys again
    run_keys: I64 | None = None

    def order_ids(self, rows: I64 | None = None) -> list[str]:
        """Order ids of order rows (all rows when None), read through ``id_lookup``."""
        return self.id_lookup(self.o_ref if rows is None else self.o_ref[rows])

    def with_lines(self, l_order: I64, l_product: I32, l_sku: I32, l_qty: I64) -> Facts:
        return replace(self, l_order=l_order, l_product=l_product, l_sku=l_sku, l_qty=l_qty)


def group_key(o_cid: I32, o_email: I32) -> I64:
    """Run key of each order: ``2 * customer id code`` for registered orders, ``2 * email code + 1`` for
    guest orders (-1 for neither). Key resolution never splits a run, so a run maps to one table row."""
    # in place on one int64 column: at 10M orders, temporaries of the whole expression were ~300 MB
    out: I64 = o_email.astype(np.int64)
    out *= 2
    out += 1
    registered = o_cid >= 0
    np.copyto(out, o_cid, where=registered)
    np.multiply(out, 2, out=out, where=registered)
    return out


def group_starts(keys: I64) -> I64:
    """First row of each run of equal (sorted) keys."""
    if len(keys) == 0:
        return np.empty(0, np.int64)
    starts: I64 = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return starts


def grouped(facts: Facts) -> Facts:
    """The same facts with the order rows sorted by :func:`group_key` (stable) and lines re-pointed.

    A one-off sort (the snapshot keeps its rows in this order as it refreshes, see
    ``worker/store/snapshot.py``); results do not depend on row order, so tables are identical.
    """
    keys = group_key(facts.o_cid, facts.o_email)
    perm = np.argsort(keys, kind="stable")
    where = np.empty(len(perm), dtype=np.int64)
    where[perm] = np.arange(len(perm), dtype=np.int64)
    columns = {name: getattr(facts, name)[perm] for name in ("o_ref", *ORDER_ARRAYS, *ORDER_ARRAYS_2)}
    return replace(facts, **columns, l_order=where[facts.l_order], o_groups=group_starts(keys[perm]), run_keys=None)


def ns_of(series: pd.Series) -> I64:
    """UTC timestamps as int64 nanoseconds (NaT becomes the int64 minimum)."""
    naive = series.dt.tz_convert("UTC").dt.tz_localize(None)
    ns: I64 = naive.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ns


def micros_of(totals: npt.ArrayLike) -> I64:
    """Money in integer micro-units, so sums are exact and order-independent."""
    out: I64 = np.round(np.asarray(totals, dtype=np.float64) * MICROS).astype(np.int64)
    return out


def tristate(values: pd.Series) -> I8:
    """A nullable boolean column as -1 (missing), 0, 1."""
    out = np.full(len(values), -1, dtype=np.int8)
    known = values.notna().to_numpy(dtype=bool)
    out[known] = values[known].astype(bool).to_numpy(dtype=np.int8)
    return out


def consent_codes(values: npt.ArrayLike) -> I8:
    codes = pd.Categorical(np.asarray(values, dtype=object), categories=list(CONSENTS)).codes
    return np.where(codes < 0, UNKNOWN_CONSENT, codes).astype(np.int8)


def facts_from_frames(orders: pd.DataFrame, customers: pd.DataFrame, lines: pd.DataFrame) -> Facts:
    """Facts from frames already validated by :mod:`worker.segments.frames`."""
    strings = Interner()
    n = len(orders)
    absent = np.full(n, -1, dtype=np.int32)
    o_id = orders["order_id"].to_numpy(dtype=object)
    facts = Facts(
        strings=strings,
        id_lookup=IdsInMemory(o_id),
        o_ref=np.arange(n, dtype=np.int64),
        o_cid=strings.factorize(orders["customer_id"]),
        o_email=strings.factorize(orders["email"]),
        o_ns=ns_of(orders["created_at"]),
        o_micros=micros_of(orders["total"]),
        o_cancelled=orders["cancelled"].to_numpy(dtype=bool),
        o_test=orders["test"].to_numpy(dtype=bool),
        o_discount=orders["has_discount"].to_numpy(dtype=bool),
        o_channel=strings.factorize(orders["channel"]),
        o_accepts=tristate(orders["accepts_marketing"])
        if "accepts_marketing" in orders.columns
        else np.full(n, -1, dtype=np.int8),
        o_phone=strings.factorize(orders["phone"]) if "phone" in orders.columns else absent,
        c_id=strings.factorize(customers["customer_id"]),
        c_email=strings.factorize(customers["email"]),
        c_phone=strings.factorize(customers["phone"]),
        c_first=strings.factorize(customers["first_name"]),
        c_last=strings.factorize(customers["last_name"]),
        c_country=strings.factorize(customers["country"]),
        c_consent=consent_codes(customers["email_consent"]),
        c_engaged_ns=ns_of(customers["last_engaged_at"]),
    )
    if len(lines) == 0 or n == 0:
        return facts
    pos = pd.Index(o_id).get_indexer(pd.Index(lines["order_id"].to_numpy(dtype=object)))
    known = pos >= 0
    return facts.with_lines(
        pos[known].astype(np.int64),
        strings.factorize(lines["product_id"].to_numpy(dtype=object)[known]),
        strings.factorize(lines["sku"].to_numpy(dtype=object)[known]),
        lines["quantity"].to_numpy(dtype=np.int64)[known],
    )
