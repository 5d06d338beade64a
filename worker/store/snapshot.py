"""A per-process columnar copy of orders, customers and order lines, refreshed incrementally.

The SQL store stays the source of truth. Every order/customer write batch stamps its rows with a
growing ``ingest_seq`` (and a ``row_no`` fixed at first insert); a refresh reads only rows with
``ingest_seq`` above the last one it saw and upserts them into the arrays by ``row_no`` (a re-ingested
order replaces its previous version, its lines are replaced as a whole). Deletions bump
``generation`` and force a full reload. The arrays may be saved to a local ``.npz`` cache so a new
process does not re-read millions of rows; a missing, unreadable or stale cache is simply rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import select, text

from worker.segments.facts import (
    NAT,
    Facts,
    Interner,
    consent_codes,
    group_key,
    group_starts,
    micros_of,
)
from worker.segments.table import forget_table
from worker.store import schema
from worker.store.db import Store

if TYPE_CHECKING:
    from worker.store.persist import Written

log = logging.getLogger(__name__)
FETCH = 200_000
SEP = "\x00"
CACHE_FORMAT = 2  # 2: no order ids (read from the store on a tie)
ID_CHUNK = 5_000

_ORDERS_SQL = (
    "SELECT row_no, customer_id, email, created_at, total, cancelled, test, has_discount, channel, "
    "accepts_marketing FROM orders WHERE ingest_seq > :seq ORDER BY +row_no"
)  # "+row_no": sorted after the ingest_seq search, never by a scan of the row_no index (all rows)
_CUSTOMERS_SQL = (
    "SELECT row_no, customer_id, email, phone, first_name, last_name, country, email_consent, last_engaged_at "
    "FROM customers WHERE ingest_seq > :seq ORDER BY row_no"
)
_LINES_SQL = (
    "SELECT o.row_no, l.product_id, l.sku, l.quantity FROM order_lines l JOIN orders o ON o.order_id = l.order_id "
    "WHERE o.ingest_seq > :seq"
)


def _ns(values: Sequence[Any]) -> npt.NDArray[np.int64]:
    """Timestamps from a driver (ISO text from SQLite, datetimes from PostgreSQL) as UTC ns."""
    if len(values) == 0:
        return np.empty(0, np.int64)
    stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    ns: npt.NDArray[np.int64] = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    return ns


def _flags(values: Sequence[Any]) -> npt.NDArray[np.bool_]:
    return np.asarray([bool(v) for v in values], dtype=bool)


def _tristate(values: Sequence[Any]) -> npt.NDArray[np.int8]:
    return np.asarray([-1 if v is None else int(bool(v)) for v in values], dtype=np.int8)


@dataclass
class _Columns:
    """Rows sorted by ``row``; ``data`` maps a Facts field name to its array."""

    row: npt.NDArray[np.int64]
    data: dict[str, npt.NDArray[Any]]

    @classmethod
    def concat(cls, parts: list[_Columns], names: Sequence[str]) -> _Columns:
        if not parts:
            return cls(np.empty(0, np.int64), {})
        return cls(
            np.concatenate([p.row for p in parts]),
            {name: np.concatenate([p.data[name] for p in parts]) for name in names},
        )

    def upsert(self, new: _Columns) -> bool:
        """Replace rows with the same row number, append the rest; False if new rows are out of order."""
        if len(new.row) == 0:
            return True
        if len(self.row) == 0:
            self.row, self.data = new.row, new.data
            return True
        pos = np.searchsorted(self.row, new.row)
        found = (pos < len(self.row)) & (self.row[np.minimum(pos, len(self.row) - 1)] == new.row)
        fresh = ~found
        if fresh.any() and new.row[fresh].min() <= self.row[-1]:
            return False
        for name, column in self.data.items():
            column[pos[found]] = new.data[name][found]
        if fresh.any():
            self.row = np.concatenate([self.row, new.row[fresh]])
            for name in list(self.data):  # one column at a time: the old one is freed before the next grows
                self.data[name] = np.concatenate([self.data[name], new.data[name][fresh]])
        return True


class _Orders(_Columns):
    """Order columns kept grouped by :func:`group_key` (customer id, else guest email), so the table
    reduces them with sequential passes (``Facts.o_groups``). ``row`` holds each position's row number
    (not sorted); ``at[row number]`` is its position. A refresh inserts new rows into their run (one
    sequential copy per column), and moves a re-ingested order whose id or email changed."""

    def __init__(self, row: npt.NDArray[np.int64], data: dict[str, npt.NDArray[Any]]) -> None:
        super().__init__(np.empty(0, np.int64), {})
        self.at = np.empty(0, np.int32)
        self.starts = np.empty(0, np.int64)
        self.upsert(_Columns(row, data))

    @classmethod
    def grouped(
        cls, row: npt.NDArray[np.int64], data: dict[str, npt.NDArray[Any]], starts: npt.NDArray[np.int64]
    ) -> _Orders:
        """Columns already grouped, with their run starts (a cache file): no key is computed."""
        out = cls(np.empty(0, np.int64), {})
        if len(row):
            out.row, out.data = row, dict(data)
            out._index(starts=starts)
        return out

    @property
    def key(self) -> npt.NDArray[np.int64]:
        """Run key of every position (sorted); derived on use, not held (10M int64 would be 80 MB)."""
        if not self.data:
            return np.empty(0, np.int64)
        return group_key(self.data["o_cid"], self.data["o_email"])

    def upsert(self, new: _Columns) -> bool:
        if len(new.row) == 0:
            return True
        key = self.key
        new_key = group_key(new.data["o_cid"], new.data["o_email"])
        known = new.row < len(self.at)
        pos = np.full(len(new.row), -1, dtype=np.int64)
        pos[known] = self.at[new.row[known]]
        found = pos >= 0
        stay = found.copy()
        stay[found] = key[pos[found]] == new_key[found]
        for name, column in self.data.items():  # same run: replaced in place
            column[pos[stay]] = new.data[name][stay]
        moved = pos[found & ~stay]
        fresh = np.flatnonzero(~stay)
        if len(fresh) == 0:
            return True
        if len(self.row) == 0 and bool((new_key[1:] >= new_key[:-1]).all()):  # a grouped cache file
            self.row, self.data = new.row, dict(new.data)
            self._index(new_key)
            return True
        fresh = fresh[np.argsort(new_key[fresh], kind="stable")]
        keep = None
        if len(moved):  # the old positions of orders that change runs
            keep = np.ones(len(self.row), dtype=bool)
            keep[moved] = False
        kept_key = key if keep is None else key[keep]
        del key
        where = np.searchsorted(kept_key, new_key[fresh], side="right")
        starts = _merged_starts(kept_key, self.starts if keep is None else None, where, new_key[fresh])
        del kept_key  # keys are not held past here
        # one column at a time: the old one is freed before the next grows
        self.row = np.insert(self.row if keep is None else self.row[keep], where, new.row[fresh])
        names = list(self.data) or list(new.data)
        for name in names:
            old = self.data.get(name)
            base = new.data[name][:0] if old is None else old if keep is None else old[keep]
            del old
            self.data[name] = np.insert(base, where, new.data[name][fresh])
            del base
        self._index(starts=starts)
        return True

    def _index(self, key: npt.NDArray[np.int64] | None = None, starts: npt.NDArray[np.int64] | None = None) -> None:
        self.at = np.empty(0, np.int32)  # the old index is freed before the new one is built
        self.at = np.full(int(self.row.max()) + 1, -1, dtype=np.int32)  # positions < 2**31
        self.at[self.row] = np.arange(len(self.row), dtype=np.int32)
        if starts is None:
            assert key is not None
            starts = group_starts(key)
        self.starts = starts


def _merged_starts(
    old_key: npt.NDArray[np.int64],
    old_starts: npt.NDArray[np.int64] | None,
    where: npt.NDArray[np.int64],
    new_key: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Run starts of ``np.insert(old_key, where, new_key)`` without building it (80 MB at 10M rows).

    ``where`` comes from ``searchsorted(old_key, new_key, side="right")`` (``new_key`` sorted), so a
    new row goes after every old row with its key: old run starts stay starts (shifted by the rows
    inserted before them), and a new row starts a run only where its key differs from the row before it.
    """
    if old_starts is None:
        old_starts = group_starts(old_key)
    m = len(where)
    shifted = old_starts + np.searchsorted(where, old_starts, side="right")
    # the key of the row each new row follows in the merged order (int64 minimum, which no key is: none)
    before = np.empty(m, dtype=np.int64)
    if m:
        before[:] = np.iinfo(np.int64).min
        if len(old_key):
            after_old = np.flatnonzero(where > 0)
            before[after_old] = old_key[where[after_old] - 1]
        follows_new = np.zeros(m, dtype=bool)
        follows_new[1:] = where[1:] == where[:-1]
        before[follows_new] = new_key[np.flatnonzero(follows_new) - 1]
    fresh_starts = (where + np.arange(m, dtype=np.int64))[new_key != before]
    out: npt.NDArray[np.int64] = np.sort(np.concatenate([shifted, fresh_starts]))
    return out


ORDER_FIELDS = (
    "o_cid",
    "o_email",
    "o_ns",
    "o_micros",
    "o_cancelled",
    "o_test",
    "o_discount",
    "o_channel",
    "o_accepts",
)
CUSTOMER_FIELDS = ("c_id", "c_email", "c_phone", "c_first", "c_last", "c_country", "c_consent", "c_engaged_ns")
LINE_FIELDS = ("l_product", "l_sku", "l_qty")


class Snapshot:
    """Columnar orders/customers/lines of one store, as :class:`Facts` (see the module doc)."""

    def __init__(self, store: Store, cache_path: Path | None = None, save_every: int = 200_000) -> None:
        self.store = store
        self.cache_path = cache_path
        self.save_every = save_every
        self._reset()
        self.stats: dict[str, Any] = {}

    def _reset(self) -> None:
        self.instance = ""
        self.generation = -1
        self.seq = 0
        self.strings = Interner()
        self.orders = _Orders(np.empty(0, np.int64), {})
        self.customers = _Columns(np.empty(0, np.int64), {})
        self.lines = _Columns(np.empty(0, np.int64), {})
        self.unsaved = 0
        self._facts: Facts | None = None  # handed out again while nothing changed
        self._run_keys: npt.NDArray[np.int64] | None = None  # carried into the next facts (_keys_hold)
        #: recompute results this process last wrote, on this dictionary's codes (worker/store/persist.py)
        self.written: Written | None = None

    # -- reading SQL ---------------------------------------------------------------------
    def _read_orders(self, conn: Any, seq: int) -> _Columns:
        parts: list[_Columns] = []
        result = conn.execute(text(_ORDERS_SQL), {"seq": seq})
        while rows := result.fetchmany(FETCH):
            cols = list(zip(*rows, strict=True))
            parts.append(
                _Columns(
                    np.asarray(cols[0], dtype=np.int64),
                    {
                        "o_cid": self.strings.factorize(cols[1]),
                        "o_email": self.strings.factorize(cols[2]),
                        "o_ns": _ns(cols[3]),
                        "o_micros": micros_of(cols[4]),
                        "o_cancelled": _flags(cols[5]),
                        "o_test": _flags(cols[6]),
                        "o_discount": _flags(cols[7]),
                        "o_channel": self.strings.factorize(cols[8]),
                        "o_accepts": _tristate(cols[9]),
                    },
                )
            )
        return _Columns.concat(parts, ORDER_FIELDS)

    def _read_customers(self, conn: Any, seq: int) -> _Columns:
        parts: list[_Columns] = []
        result = conn.execute(text(_CUSTOMERS_SQL), {"seq": seq})
        while rows := result.fetchmany(FETCH):
            cols = list(zip(*rows, strict=True))
            engaged = pd.Series(cols[8], dtype=object)
            engaged_ns = np.full(len(engaged), NAT, dtype=np.int64)
            known = engaged.notna().to_numpy()
            engaged_ns[known] = _ns(engaged[known].tolist())
            parts.append(
                _Columns(
                    np.asarray(cols[0], dtype=np.int64),
                    {
                        "c_id": self.strings.factorize(cols[1]),
                        "c_email": self.strings.factorize(cols[2]),
                        "c_phone": self.strings.factorize(cols[3]),
                        "c_first": self.strings.factorize(cols[4]),
                        "c_last": self.strings.factorize(cols[5]),
                        "c_country": self.strings.factorize(cols[6]),
                        "c_consent": consent_codes(cols[7]),
                        "c_engaged_ns": engaged_ns,
                    },
                )
            )
        return _Columns.concat(parts, CUSTOMER_FIELDS)

    def _read_lines(self, conn: Any, seq: int) -> _Columns:
        parts: list[_Columns] = []
        result = conn.execute(text(_LINES_SQL), {"seq": seq})
        while rows := result.fetchmany(FETCH):
            cols = list(zip(*rows, strict=True))
            parts.append(
                _Columns(
                    np.asarray(cols[0], dtype=np.int64),
                    {
                        "l_product": self.strings.factorize(cols[1]),
                        "l_sku": self.strings.factorize(cols[2]),
                        "l_qty": np.asarray(cols[3], dtype=np.int64),
                    },
                )
            )
        return _Columns.concat(parts, LINE_FIELDS)

    # -- refresh -------------------------------------------------------------------------
    def refresh(self) -> Facts:
        """Bring the arrays up to date with the store and return them as facts."""
        state = schema.ingest_state.c
        with self.store.engine.connect() as conn:
            instance, generation, seq = conn.execute(select(state.instance, state.generation, state.seq)).one()
            if (instance, generation) != (self.instance, self.generation) and not self._load_cache(
                instance, generation, seq
            ):
                self._reset()
            full = self.seq == 0
            since = self.seq
            orders = self._read_orders(conn, since)
            customers = self._read_customers(conn, since)
            lines = self._read_lines(conn, since)
        changed = len(orders.row) + len(customers.row)
        old = self._facts
        self._run_keys = old.run_keys if old is not None and not full and self._keys_hold(orders, customers) else None
        del old
        if changed or full:
            if self._facts is not None:
                forget_table(self._facts)
            self._facts = None  # before the arrays change: the old facts and their table can be freed
        ok = self.orders.upsert(orders) and self.customers.upsert(customers)
        if not ok:  # rows numbered before ours appeared: cannot happen with the counter, reload anyway
            log.warning("snapshot: out-of-order rows; reloading")
            self._reset()
            return self.refresh()
        if len(orders.row):
            drop = np.isin(self.lines.row, orders.row) if len(self.lines.row) else np.empty(0, bool)
            if drop.any():
                self.lines = _Columns(self.lines.row[~drop], {k: v[~drop] for k, v in self.lines.data.items()})
            if len(lines.row):
                self.lines = _Columns.concat([self.lines, lines], LINE_FIELDS) if len(self.lines.row) else lines
        self.instance, self.generation, self.seq = instance, generation, int(seq)
        self.strings.release_index()  # a worker holds no hash of its ~2M strings between cycles
        self.unsaved += changed
        self.stats = {
            "full": full,
            "changed_rows": changed,
            "orders": len(self.orders.row),
            "keys_kept": self._run_keys is not None,
        }
        if self.cache_path is not None and changed and (full or self.unsaved >= self.save_every):
            self.save()
        return self.facts()

    def _keys_hold(self, orders: _Columns, customers: _Columns) -> bool:
        """True if these new rows change no input of key resolution: every order row replaces one with
        the same customer id, email and test flag (so no run is added, moved or emptied of live orders),
        and every customers row replaces one with the same id and email (a new customer may take a
        guest's email). A refund, a status change, a rename or a consent change keeps the keys."""
        if len(orders.row):
            at = self.orders.at
            known = orders.row < len(at)
            if not known.all():
                return False
            pos = at[orders.row]
            if (pos < 0).any():
                return False
            for name in ("o_cid", "o_email", "o_test"):
                if not np.array_equal(self.orders.data[name][pos], orders.data[name]):
                    return False
        if len(customers.row):
            held = self.customers.row
            if len(held) == 0:
                return False
            pos = np.minimum(np.searchsorted(held, customers.row), len(held) - 1)
            if not (held[pos] == customers.row).all():
                return False
            for name in ("c_id", "c_email"):
                if not np.array_equal(self.customers.data[name][pos], customers.data[name]):
                    return False
        return True

    def facts(self) -> Facts:
        """The arrays as facts: the same object until the next refresh that changes something."""
        if self._facts is None:
            self._facts = self._build_facts()
        return self._facts

    def _build_facts(self) -> Facts:
        m = len(self.orders.row)
        columns: dict[str, Any] = {name: np.empty(0, np.int32) for name in ORDER_FIELDS + CUSTOMER_FIELDS}
        columns.update(self.orders.data)
        columns.update(self.customers.data)
        columns["c_consent"] = columns["c_consent"].astype(np.int8)
        no_phone = np.broadcast_to(np.int32(-1), (m,))  # the store keeps no order phone: a read-only view
        facts = Facts(
            strings=self.strings,
            id_lookup=self.order_ids,
            o_ref=self.orders.row,  # row numbers: held anyway, so the ids cost no memory
            o_phone=no_phone,
            o_groups=self.orders.starts,
            run_keys=self._run_keys,
            **columns,
        )
        if len(self.lines.row) and m:
            l_order = self.orders.at[self.lines.row].astype(np.int64)
            d = self.lines.data
            facts = facts.with_lines(l_order, d["l_product"], d["l_sku"], d["l_qty"])
        return facts

    def order_ids(self, row_numbers: npt.NDArray[np.int64]) -> list[str]:
        """Order ids by row number, read from the store: only ties between orders at one timestamp
        need them, so a snapshot of 10M orders holds no id strings. A row number never changes its
        order; a row deleted since the refresh (an erasure) reads as "" (sorts first, deterministic)."""
        wanted = np.unique(row_numbers)
        found: dict[int, str] = {}
        table = schema.orders
        with self.store.engine.connect() as conn:
            for start in range(0, len(wanted), ID_CHUNK):
                chunk = wanted[start : start + ID_CHUNK].tolist()
                rows = conn.execute(select(table.c.row_no, table.c.order_id).where(table.c.row_no.in_(chunk)))
                found.update((int(r), str(i)) for r, i in rows)
        return [found.get(r, "") for r in row_numbers.tolist()]

    # -- cache file ------------------------------------------------------------------------
    def save(self) -> None:
        """Write the arrays to the cache file (atomically); skipped if a string holds the separator."""
        assert self.cache_path is not None
        strings = self.strings.strings
        if any(SEP in s for s in strings):
            return
        arrays: dict[str, npt.NDArray[Any]] = {
            "meta": np.asarray([CACHE_FORMAT, self.generation, self.seq], dtype=np.int64),
            "instance": np.frombuffer(self.instance.encode(), dtype=np.uint8),
            "strings": np.frombuffer(SEP.join(strings).encode(), dtype=np.uint8),
            "order": self.strings.order,
            "o_row": self.orders.row,
            "o_starts": self.orders.starts,
            "c_row": self.customers.row,
            "l_row": self.lines.row,
        }
        for prefix, columns in (("o", self.orders), ("c", self.customers), ("l", self.lines)):
            for name, column in columns.data.items():
                arrays[f"{prefix}:{name}"] = column
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, prefix=f".{self.cache_path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, allow_pickle=False, **arrays)
            os.replace(tmp, self.cache_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.unsaved = 0

    def _load_cache(self, instance: str, generation: int, seq: int) -> bool:
        """Load the cache file if it was written for this database and generation, not ahead of it."""
        path = self.cache_path
        if path is None or not path.exists():
            return False
        try:
            with np.load(path, allow_pickle=False) as data:
                fmt, gen, cached_seq = (int(v) for v in data["meta"])
                if (fmt, gen, bytes(data["instance"]).decode()) != (CACHE_FORMAT, generation, instance):
                    return False
                if cached_seq > seq:
                    return False
                strings = bytes(data["strings"]).decode().split(SEP) if len(data["strings"]) else []
                order = data["order"]
                orders = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("o:")}
                customers = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("c:")}
                lines = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("l:")}
                o_row, c_row, l_row = data["o_row"], data["c_row"], data["l_row"]
                starts = data["o_starts"]
                if len(o_row) and (len(starts) == 0 or starts[0] != 0 or starts[-1] >= len(o_row)):
                    return False
            if len(order) != len(strings) or any(len(v) != len(o_row) for v in orders.values()):
                return False
            self._reset()
            self.strings = Interner(strings, order)
            self.orders = _Orders.grouped(o_row, orders, starts)
            self.customers = _Columns(c_row, customers)
            self.lines = _Columns(l_row, lines)
            self.instance, self.generation, self.seq = instance, generation, cached_seq
            return True
        except (OSError, ValueError, KeyError) as exc:
            log.warning("snapshot cache unreadable (%s); rebuilding from the store", type(exc).__name__)
            return False


#: where a worker keeps its snapshot cache of a server database (PostgreSQL), relative to its directory
SERVER_CACHE_DIR = Path("var/snapshot")


def default_cache_path(url: str) -> Path | None:
    """Beside a SQLite file; for a server database (PostgreSQL) under :data:`SERVER_CACHE_DIR`, one file
    per database (named by a hash of its URL, never the URL: it may hold a password), so a new worker
    process starts from it in seconds instead of reading every order. None for an in-memory database."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        return Path(url.removeprefix("sqlite:///") + ".snapshot.npz")
    if url.startswith("sqlite"):
        return None
    return SERVER_CACHE_DIR / f"{hashlib.sha256(url.encode()).hexdigest()[:20]}.snapshot.npz"


_SNAPSHOTS: dict[str, Snapshot] = {}


def snapshot_for(store: Store) -> Snapshot:
    """The process's snapshot of this store's database (one per URL), created on first use."""
    url = store.engine.url.render_as_string(hide_password=True)
    snap = _SNAPSHOTS.get(url)
    if snap is None:
        snap = _SNAPSHOTS[url] = Snapshot(store, default_cache_path(url))
    snap.store = store  # the latest Store object for this URL (tests open and dispose several)
    return snap
