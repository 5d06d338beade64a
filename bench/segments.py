"""Segment recompute benchmark (not a test): synthetic store, durable load, timed recomputes.

    .venv/bin/python -m bench.segments            # 1,000,000 customers / 10,000,000 orders
    .venv/bin/python -m bench.segments --small    # 100,000 / 1,000,000
    .venv/bin/python -m bench.segments --database-url postgresql+psycopg://...
    .venv/bin/python -m bench.segments --reuse /tmp/bench.sqlite3 --only-store --skip-cold  # keep the store

Times (a) every default segment from facts already in memory, (b) a recompute from the store
(snapshot refresh incl. load + compute; persistence reported on its own), and lifetimes'
``summary_data_from_transaction_data`` on the same orders. Each phase runs in a fresh child process,
so its peak memory (``resource.getrusage`` ru_maxrss, peak RSS of that process) is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from worker.segments import segment_masks, table_from_facts
from worker.segments.facts import CONSENTS, NAT, Facts, Interner, grouped

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
DAY_NS = 86_400 * 10**9
CHANNELS = ["google / cpc", "facebook / paid", "newsletter / email", "direct", "instagram / social"]
FIRST = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal", "Ida", "Jon"]
COUNTRIES = ["US", "GB", "DE", "FR", "CA", "AU", "NL"]


@dataclass
class Synthetic:
    """Generated store: customer/guest identities as codes, orders as arrays (see :func:`generate`)."""

    customers: int
    guests: int
    o_person: npt.NDArray[np.int64]  # < customers: registered; else guest number + customers
    o_guest_checkout: npt.NDArray[np.bool_]  # registered person checking out as a guest (merge by email)
    o_ns: npt.NDArray[np.int64]
    o_total: npt.NDArray[np.float64]
    o_cancelled: npt.NDArray[np.bool_]
    o_test: npt.NDArray[np.bool_]
    o_discount: npt.NDArray[np.bool_]
    o_channel: npt.NDArray[np.int64]  # -1 none
    o_accepts: npt.NDArray[np.int8]
    c_has_email: npt.NDArray[np.bool_]
    c_consent: npt.NDArray[np.int8]
    c_engaged_ns: npt.NDArray[np.int64]
    c_first: npt.NDArray[np.int64]
    c_country: npt.NDArray[np.int64]
    l_order: npt.NDArray[np.int64]
    l_product: npt.NDArray[np.int64]
    l_qty: npt.NDArray[np.int64]


def _consent_mix() -> list[float]:
    share = {"SUBSCRIBED": 0.4, "NOT_SUBSCRIBED": 0.3, "UNSUBSCRIBED": 0.15, "PENDING": 0.03}
    rest = (1 - sum(share.values())) / (len(CONSENTS) - len(share))
    return [share.get(c, rest) for c in CONSENTS]


def generate(customers: int, orders: int, seed: int = 7, line_share: float = 0.05) -> Synthetic:
    """Seeded, vectorized: lognormal order propensity (many one-order buyers, a heavy repeat tail),
    30% more people who only check out as guests, 5% of registered orders placed as guest checkouts,
    ~3% cancelled, ~30% discounted, 0.2% test, five channels (20% none), lines on ``line_share``."""
    rng = np.random.default_rng(seed)
    guests = int(customers * 0.3)
    people = customers + guests
    weight = rng.lognormal(0.0, 1.6, people)
    cumulative = np.cumsum(weight)
    o_person = np.searchsorted(cumulative, rng.random(orders) * cumulative[-1]).astype(np.int64)
    now_ns = int(pd.Timestamp(NOW).value)
    span = 3 * 365 * DAY_NS
    o_ns = np.sort(rng.integers(now_ns - span, now_ns, orders, dtype=np.int64))
    o_ns -= o_ns % 10**6  # millisecond timestamps, like the store APIs
    channel = rng.choice(len(CHANNELS) + 1, orders, p=[0.25, 0.2, 0.15, 0.15, 0.05, 0.2]).astype(np.int64)
    n_lines = int(orders * line_share)
    return Synthetic(
        customers=customers,
        guests=guests,
        o_person=o_person,
        o_guest_checkout=(o_person < customers) & (rng.random(orders) < 0.05),
        o_ns=o_ns,
        o_total=np.round(rng.lognormal(3.8, 0.7, orders), 2),
        o_cancelled=rng.random(orders) < 0.03,
        o_test=rng.random(orders) < 0.002,
        o_discount=rng.random(orders) < 0.30,
        o_channel=np.where(channel == len(CHANNELS), -1, channel),
        o_accepts=rng.choice(np.array([-1, 0, 1], dtype=np.int8), orders, p=[0.2, 0.5, 0.3]),
        c_has_email=rng.random(customers) < 0.98,
        c_consent=rng.choice(len(CONSENTS), customers, p=_consent_mix()).astype(np.int8),
        c_engaged_ns=np.where(
            rng.random(customers) < 0.5, now_ns - rng.integers(0, 120, customers) * DAY_NS, NAT
        ).astype(np.int64),
        c_first=rng.integers(0, len(FIRST), customers),
        c_country=rng.integers(0, len(COUNTRIES), customers),
        l_order=np.sort(rng.choice(orders, n_lines, replace=False)).astype(np.int64)
        if n_lines
        else np.empty(0, np.int64),
        l_product=rng.integers(0, 500, n_lines),
        l_qty=rng.integers(0, 4, n_lines),
    )


def customer_id(i: npt.NDArray[np.int64]) -> list[str]:
    return [f"{7_000_000_000 + v}" for v in i.tolist()]


def email(i: npt.NDArray[np.int64], customers: int) -> list[str]:
    return [f"user{v}@example.com" if v < customers else f"guest{v - customers}@example.net" for v in i.tolist()]


def _numbered_ids(refs: npt.NDArray[np.int64]) -> list[str]:
    """Order ids of the synthetic store (``str(position + 1)``, as ``_load`` writes them)."""
    return [str(r + 1) for r in refs.tolist()]


def facts_of(data: Synthetic) -> Facts:
    """Facts straight from the generator's codes (no string hashing): ids, then emails, then the rest."""
    n_c, people = data.customers, data.customers + data.guests
    strings = customer_id(np.arange(n_c)) + email(np.arange(people), n_c) + CHANNELS + FIRST + COUNTRIES
    strings += [f"P{p}" for p in range(500)]
    base_email, base_channel = n_c, n_c + people
    base_first, base_country = base_channel + len(CHANNELS), base_channel + len(CHANNELS) + len(FIRST)
    base_product = base_country + len(COUNTRIES)
    person = data.o_person
    registered = (person < n_c) & ~data.o_guest_checkout
    has_email = np.where(person < n_c, data.c_has_email[np.minimum(person, n_c - 1)], True)
    interner = Interner(strings)
    _ = interner.order  # the cached sort order is part of the facts (the snapshot keeps it too)
    m, k = len(person), n_c
    return Facts(
        strings=interner,
        id_lookup=_numbered_ids,
        o_ref=np.arange(m, dtype=np.int64),
        o_cid=np.where(registered, person, -1).astype(np.int32),
        o_email=np.where(has_email, base_email + person, -1).astype(np.int32),
        o_ns=data.o_ns,
        o_micros=np.round(data.o_total * 1_000_000).astype(np.int64),
        o_cancelled=data.o_cancelled,
        o_test=data.o_test,
        o_discount=data.o_discount,
        o_channel=np.where(data.o_channel >= 0, base_channel + data.o_channel, -1).astype(np.int32),
        o_accepts=data.o_accepts,
        o_phone=np.full(m, -1, np.int32),
        c_id=np.arange(k, dtype=np.int32),
        c_email=np.where(data.c_has_email, base_email + np.arange(k), -1).astype(np.int32),
        c_phone=np.full(k, -1, np.int32),
        c_first=(base_first + data.c_first).astype(np.int32),
        c_last=np.full(k, -1, np.int32),
        c_country=(base_country + data.c_country).astype(np.int32),
        c_consent=data.c_consent,
        c_engaged_ns=data.c_engaged_ns,
        l_order=data.l_order,
        l_product=(base_product + data.l_product).astype(np.int32),
        l_sku=np.full(len(data.l_order), -1, np.int32),
        l_qty=data.l_qty,
    )


# -- loading the durable store ------------------------------------------------------------------
def _iso(ns: npt.NDArray[np.int64]) -> list[str]:
    """SQLAlchemy's SQLite DateTime text form (UTC, microseconds)."""
    text = np.datetime_as_string(ns.view("datetime64[ns]").astype("datetime64[us]"), unit="us")
    return [t.replace("T", " ") for t in text.tolist()]


def _chunks(n: int, size: int = 200_000) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def load_store(url: str, data: Synthetic) -> None:
    """Bulk-insert the synthetic store as one ingest batch (stamped like Store.upsert_*)."""
    from worker.store import open_store, schema

    store = open_store(url)
    n_c, m = data.customers, len(data.o_person)
    now_text = _iso(np.array([pd.Timestamp(NOW).value], dtype=np.int64))[0]
    pg = store.dialect == "postgresql"
    person = data.o_person
    registered = (person < n_c) & ~data.o_guest_checkout
    has_email = np.where(person < n_c, data.c_has_email[np.minimum(person, n_c - 1)], True)
    with store.engine.begin() as conn:
        seq, first = store.reserve_ingest(conn, n_c + m)
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor: Any = raw.cursor()
        consents = list(CONSENTS)

        def put(table: str, columns: list[str], rows: Callable[[slice], list[tuple[Any, ...]]], n: int) -> None:
            for part in _chunks(n):
                batch = rows(part)
                if pg:
                    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in batch:
                            copy.write_row(row)
                else:
                    marks = ", ".join("?" for _ in columns)
                    cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", batch)

        def customer_rows(part: slice) -> list[tuple[Any, ...]]:
            ids = np.arange(part.start, part.stop)
            emails = email(ids, n_c)
            engaged = data.c_engaged_ns[part]
            engaged_text = _iso(np.where(engaged == NAT, 0, engaged))
            return [
                (
                    cid,
                    "bench",
                    em if has else None,
                    FIRST[int(fi)],
                    COUNTRIES[int(co)],
                    consents[int(cs)],
                    et if en != NAT else None,
                    now_text,
                    seq,
                    first + int(i),
                )
                for cid, em, has, fi, co, cs, et, en, i in zip(
                    customer_id(ids),
                    emails,
                    data.c_has_email[part].tolist(),
                    data.c_first[part].tolist(),
                    data.c_country[part].tolist(),
                    data.c_consent[part].tolist(),
                    engaged_text,
                    engaged.tolist(),
                    ids.tolist(),
                    strict=True,
                )
            ]

        put(
            "customers",
            [
                *("customer_id", "source", "email", "first_name", "country", "email_consent"),
                *("last_engaged_at", "updated_at", "ingest_seq", "row_no"),
            ],
            customer_rows,
            n_c,
        )

        def order_rows(part: slice) -> list[tuple[Any, ...]]:
            idx = np.arange(part.start, part.stop)
            cids = customer_id(person[part])
            emails = email(person[part], n_c)
            created = _iso(data.o_ns[part])
            channels = [CHANNELS[c] if c >= 0 else None for c in data.o_channel[part].tolist()]
            accepts = [None if a < 0 else bool(a) for a in data.o_accepts[part].tolist()]
            return [
                (
                    str(i + 1),
                    "bench",
                    cid if reg else None,
                    em if he else None,
                    ts,
                    ts,
                    tot,
                    "USD",
                    *(ca, te, di, ch, ac),
                    seq,
                    first + n_c + i,
                )
                for i, cid, reg, em, he, ts, tot, ca, te, di, ch, ac in zip(
                    idx.tolist(),
                    cids,
                    registered[part].tolist(),
                    emails,
                    has_email[part].tolist(),
                    created,
                    data.o_total[part].tolist(),
                    data.o_cancelled[part].tolist(),
                    data.o_test[part].tolist(),
                    data.o_discount[part].tolist(),
                    channels,
                    accepts,
                    strict=True,
                )
            ]

        put(
            "orders",
            [
                *("order_id", "source", "customer_id", "email", "created_at", "updated_at", "total", "currency"),
                *("cancelled", "test", "has_discount", "channel", "accepts_marketing", "ingest_seq", "row_no"),
            ],
            order_rows,
            m,
        )

        def line_rows(part: slice) -> list[tuple[Any, ...]]:
            return [
                (str(o + 1), 1, f"P{p}", None, q)
                for o, p, q in zip(
                    data.l_order[part].tolist(), data.l_product[part].tolist(), data.l_qty[part].tolist(), strict=True
                )
            ]

        put("order_lines", ["order_id", "line_no", "product_id", "sku", "quantity"], line_rows, len(data.l_order))
        cursor.close()
        del schema
    store.dispose()


# -- phases (each in its own process) --------------------------------------------------------------
def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _set_threads(threads: int | None) -> None:
    if threads:
        import worker.segments.table

        worker.segments.table.THREADS = threads


def phase_memory(customers: int, orders: int, repeat: int, threads: int | None = None) -> dict[str, float]:
    """(a): default segments from facts already in memory, with the order rows grouped by customer as
    the snapshot keeps them (``Facts.o_groups``), and (a') the same facts ungrouped (the scatter path,
    the previous implementation), alternating, in one process."""
    _set_threads(threads)
    plain = facts_of(generate(customers, orders))
    started = time.perf_counter()
    facts = grouped(plain)
    group_seconds = time.perf_counter() - started
    before = _peak_mib()
    times: dict[str, list[float]] = {"grouped": [], "scatter": []}
    for _ in range(repeat):
        for label, data in (("grouped", facts), ("scatter", plain)):
            started = time.perf_counter()
            masks = segment_masks(table_from_facts(data), NOW)
            times[label].append(time.perf_counter() - started)
            del masks
    return {
        "seconds": min(times["grouped"]),
        "seconds_max": max(times["grouped"]),
        "scatter": min(times["scatter"]),
        "scatter_max": max(times["scatter"]),
        "group_seconds": group_seconds,
        "peak_mib": _peak_mib(),
        "peak_before_mib": before,
        "segments": 26.0,
    }


def phase_store(url: str, cache: bool, persist: bool = False, threads: int | None = None) -> dict[str, float]:
    """(b): recompute from the store: snapshot refresh (cache file + delta, or full read) + compute,
    then persistence (profiles and membership) timed on its own."""
    _set_threads(threads)
    from worker.store import open_store
    from worker.store.snapshot import Snapshot, default_cache_path

    store = open_store(url)
    started = time.perf_counter()
    snap = Snapshot(store, default_cache_path(url) if cache else None)
    facts = snap.refresh()
    loaded = time.perf_counter()
    table = table_from_facts(facts)
    masks = segment_masks(table, NOW)
    computed = time.perf_counter()
    if persist:
        from worker.store.persist import persist as write

        write(store, table, masks, None)
    persisted = time.perf_counter()
    again = time.perf_counter()
    snap.refresh()
    refresh_again = time.perf_counter() - again
    store.dispose()
    return {
        "load": loaded - started,
        "compute": computed - loaded,
        "persist": persisted - computed,
        "refresh_nochange": refresh_again,
        "full": float(snap.stats.get("full", False)),
        "peak_mib": _peak_mib(),
    }


def phase_persist(url: str, customers: int, threads: int | None = None) -> dict[str, float]:
    """Persistence per cycle (worker/store/persist.py): first write into empty tables, a second cycle
    with nothing changed, then one where 1% of the customers changed (name, or a new order)."""
    _set_threads(threads)
    from sqlalchemy import text

    from worker.store import open_store
    from worker.store.persist import persist
    from worker.store.snapshot import Snapshot, default_cache_path

    store = open_store(url)
    with store.engine.begin() as conn:
        store.bump_results(conn)
        conn.execute(text("DELETE FROM profiles"))
        conn.execute(text("DELETE FROM segment_members"))
    snap = Snapshot(store, default_cache_path(url))
    table = table_from_facts(snap.refresh())
    masks = segment_masks(table, NOW)
    started = time.perf_counter()
    _, written = persist(store, table, masks, None)
    first = time.perf_counter() - started
    peak_first = _peak_mib()
    members = sum(int(m.sum()) for m in masks.values())
    started = time.perf_counter()
    changes, written = persist(store, table, masks, written)
    nochange = time.perf_counter() - started
    assert all(c["joined"] == c["left"] == 0 for c in changes.values())
    # a whole cycle with no new data, as cycle.recompute runs it: the table is reused, masks and diff redone
    table_from_facts(snap.refresh(), reuse=True)
    started = time.perf_counter()
    table = table_from_facts(snap.refresh(), reuse=True)
    masks = segment_masks(table, NOW)
    changes, written = persist(store, table, masks, written)
    idle_cycle = time.perf_counter() - started
    profiles = float(table.n)
    del table, masks  # as in the worker: nothing but the snapshot holds the last table between cycles
    peak_idle = _peak_mib()
    rounds = []
    # the first round after start also builds the dictionary's hash index; the third changes only names
    # (no key input), so the snapshot keeps the resolved keys
    for renames_only in (False, False, True):
        rounds.append(_change_one_percent(store, snap, written, customers, renames_only=renames_only))
        written = rounds[-1].pop("written")
    store.dispose()
    return {
        "first": first,
        "nochange": nochange,
        "idle_cycle": idle_cycle,
        "peak_first_mib": peak_first,
        **{f"{k}_{i}": v for i, r in enumerate(rounds) for k, v in r.items()},
        "profiles": profiles,
        "peak_idle_mib": peak_idle,
        "members": float(members),
        "peak_mib": _peak_mib(),
    }


def _change_one_percent(
    store: Any, snap: Any, written: Any, customers: int, *, renames_only: bool = False
) -> dict[str, Any]:
    """1% of the customers change (half renamed, half with a new order today; unique per run, so a
    rerun changes again; with ``renames_only`` all renamed); then refresh, compute and persist, timed."""
    from worker.store.persist import persist

    tag = f"{time.time_ns()}"
    picked = np.arange(0, customers, 100, dtype=np.int64)
    renamed, buyers = (picked, picked[:0]) if renames_only else (picked[::2], picked[1::2])
    store.upsert_customers(
        [
            {"customer_id": cid, "source": "bench", "email": em, "first_name": f"R{tag}", "email_consent": "SUBSCRIBED"}
            | {"updated_at": NOW}
            for cid, em in zip(customer_id(renamed), email(renamed, customers), strict=True)
        ]
    )
    orders = [
        {
            "order_id": f"x{tag}-{i}",
            "source": "bench",
            "customer_id": cid,
            "email": em,
            "created_at": NOW,
            "updated_at": NOW,
            "total": 40.0,
            "currency": "USD",
            "cancelled": False,
            "test": False,
            "has_discount": False,
        }
        for i, (cid, em) in enumerate(zip(customer_id(buyers), email(buyers, customers), strict=True))
    ]
    store.upsert_orders(orders, [])
    started = time.perf_counter()
    facts = snap.refresh()
    refreshed = time.perf_counter()
    table = table_from_facts(facts)
    masks = segment_masks(table, NOW)
    computed = time.perf_counter()
    changes, written = persist(store, table, masks, written)
    done = time.perf_counter()
    return {
        "refresh": refreshed - started,
        "compute": computed - refreshed,
        "changed": done - computed,
        "changed_customers": float(len(picked)),
        "keys_kept": float(snap.stats["keys_kept"]),
        "moves": float(sum(c["joined"] + c["left"] for c in changes.values())),
        "written": written,
    }


def phase_save_cache(url: str) -> dict[str, float]:
    """Bring the cache file up to date (not timed), so (b) starts from a current cache."""
    from worker.store import open_store
    from worker.store.snapshot import Snapshot

    store = open_store(url)
    snap = Snapshot(store, default_cache_file(url))
    snap.refresh()
    snap.save()
    store.dispose()
    return {}


def phase_lifetimes(customers: int, orders: int) -> dict[str, float]:
    from lifetimes.utils import summary_data_from_transaction_data

    data = generate(customers, orders)
    facts = facts_of(data)
    table = table_from_facts(facts)  # same keys as ours, so both see the same customers
    live = ~facts.o_cancelled & ~facts.o_test
    frame = pd.DataFrame(
        {
            "customer": table.codes[live],
            "date": pd.to_datetime(facts.o_ns[live], utc=True).tz_localize(None),
            "total": facts.o_micros[live] / 1e6,
        }
    )
    before = _peak_mib()
    started = time.perf_counter()
    summary_data_from_transaction_data(
        frame, "customer", "date", monetary_value_col="total", observation_period_end=NOW.replace(tzinfo=None)
    )
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    frame.groupby("customer").agg(first=("date", "min"), last=("date", "max"), n=("date", "size"))
    grouped_seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mib": _peak_mib(), "peak_before_mib": before, "groupby": grouped_seconds}


def _child(target: Callable[..., dict[str, float]], *args: Any) -> dict[str, float]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(target, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="100k customers / 1M orders")
    parser.add_argument("--customers", type=int)
    parser.add_argument("--orders", type=int)
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--skip-lifetimes", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--reuse", metavar="PATH", help="SQLite store file: loaded only if absent, kept afterwards (same sizes!)"
    )
    parser.add_argument("--only-store", action="store_true", help="skip (a) and lifetimes")
    parser.add_argument("--skip-cold", action="store_true", help="skip (b0), the full read without cache")
    parser.add_argument("--skip-store", action="store_true", help="only (a) and lifetimes")
    parser.add_argument("--threads", type=int, help="thread pool size of the segment code (default: up to 4 cores)")
    args = parser.parse_args(argv)
    threads = args.threads
    customers = args.customers or (100_000 if args.small else 1_000_000)
    orders = args.orders or (1_000_000 if args.small else 10_000_000)
    tmp = Path(tempfile.mkdtemp(prefix="as-bench-"))
    reuse = Path(args.reuse) if args.reuse else None
    url = args.database_url or f"sqlite:///{reuse or tmp / 'store.sqlite3'}"
    try:
        print(f"synthetic store: {customers:,} customers, {orders:,} orders (seed 7); store {url.split(':')[0]}")
        nan = float("nan")
        a = {"seconds": nan, "seconds_max": nan, "scatter": nan, "scatter_max": nan}
        lt = {"seconds": nan}
        b: dict[str, float] = {}
        p: dict[str, float] = {}
        if not args.only_store:
            a = _child(phase_memory, customers, orders, args.repeat, threads)
            print(
                f"(a) default segments ({a['segments']:.0f}) from in-memory facts, rows grouped by customer: "
                f"{a['seconds']:.3f}-{a['seconds_max']:.3f} s over {args.repeat} runs (grouping them once: "
                f"{a['group_seconds']:.1f} s, done by the snapshot as it loads); peak RSS {a['peak_mib']:.0f} MiB "
                f"with both layouts in memory (facts alone {a['peak_before_mib']:.0f} MiB)\n"
                f"(a') the same facts ungrouped (scatter path), same process, alternating: "
                f"{a['scatter']:.3f}-{a['scatter_max']:.3f} s"
            )
        if not args.skip_lifetimes and not args.only_store:
            lt = _child(phase_lifetimes, customers, orders)
            print(
                f"    lifetimes summary_data_from_transaction_data: {lt['seconds']:.2f} s, peak RSS "
                f"{lt['peak_mib']:.0f} MiB; pandas groupby of the same: {lt['groupby']:.2f} s"
            )
            print(
                f"    ratio lifetimes / (a): {lt['seconds'] / a['seconds_max']:.1f}x-"
                f"{lt['seconds'] / a['seconds']:.1f}x (slowest-fastest run of (a)); lifetimes / (a'): "
                f"{lt['seconds'] / a['scatter']:.1f}x"
            )
        if args.skip_store:
            _targets(a, lt, b, p)
            return 0
        if reuse is None or not reuse.exists():
            started = time.perf_counter()
            _child(_load, url, customers, orders)
            print(f"store loaded in {time.perf_counter() - started:.1f} s (bulk insert; not timed)")
        if not args.skip_cold:
            cold = _child(phase_store, url, False, False, threads)
            print(
                f"(b0) cold (no cache file): full read from SQL {cold['load']:.2f} s + compute "
                f"{cold['compute']:.2f} s = {cold['load'] + cold['compute']:.2f} s; peak RSS {cold['peak_mib']:.0f} MiB"
            )
            _child(phase_store, url, True, False)  # a full read that writes the cache file
        else:  # a reused store may have changed since its cache was written (phase_persist adds rows)
            _child(phase_save_cache, url)
        b = _child(phase_store, url, True, False, threads)
        print(
            f"(b) recompute from the store, new process with cache: load {b['load']:.2f} s + compute "
            f"{b['compute']:.2f} s = {b['load'] + b['compute']:.2f} s; peak RSS {b['peak_mib']:.0f} MiB"
        )
        print(f"    incremental refresh with no new rows: {b['refresh_nochange'] * 1000:.0f} ms")
        p = _child(phase_persist, url, customers, threads)
        print(
            f"persistence ({p['profiles']:,.0f} profiles, {p['members']:,.0f} memberships): first write into empty "
            f"tables {p['first']:.2f} s (peak RSS so far {p['peak_first_mib']:.0f} MiB); next cycle, nothing changed "
            f"{p['nochange']:.2f} s; peak RSS of the whole phase {p['peak_mib']:.0f} MiB\n"
            f"    whole cycle with no new data (refresh, table reused, masks, persist): {p['idle_cycle']:.2f} s "
            f"(peak RSS so far {p['peak_idle_mib']:.0f} MiB)"
        )
        labels = ("first 1% cycle in the process", "next 1% cycle", "1% renamed only")
        for i, label in enumerate(labels):
            print(
                f"    {label}: {p[f'changed_customers_{i}']:,.0f} customers changed "
                f"({p[f'moves_{i}']:,.0f} joins/leaves): refresh {p[f'refresh_{i}']:.2f} s + compute "
                f"{p[f'compute_{i}']:.2f} s + persist {p[f'changed_{i}']:.2f} s; resolved keys kept: "
                f"{'yes' if p[f'keys_kept_{i}'] else 'no'}"
            )
        _targets(a, lt, b, p)
    finally:
        if args.database_url is None and reuse is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _targets(a: dict[str, float], lt: dict[str, float], b: dict[str, float], p: dict[str, float]) -> None:
    """The segment rows of Roadmap 9's targets table, each with its peer from this run."""
    nan = float("nan")
    b = {"load": nan, "compute": nan, "peak_mib": nan, **b}
    p = {"peak_idle_mib": nan, **p}
    worker_peak = max(b["peak_mib"], p["peak_idle_mib"])
    print(
        "targets (this run):\n"
        f"    all default segments in memory: {a['seconds']:.2f}-{a['seconds_max']:.2f} s (target <= 1.0 s); "
        f"peer: scatter path {a['scatter']:.2f}-{a['scatter_max']:.2f} s, lifetimes {lt['seconds']:.1f} s\n"
        f"    ratio to lifetimes: {lt['seconds'] / a['seconds_max']:.1f}x-{lt['seconds'] / a['seconds']:.1f}x "
        "(target >= 10x in every run)\n"
        f"    whole recompute from the store, new process: {b['load'] + b['compute']:.2f} s (target <= 3 s); "
        f"peer: in memory {a['seconds']:.2f} s\n"
        f"    peak memory of a worker at this size: {worker_peak:.0f} MiB = {worker_peak / 1024:.2f} GiB "
        f"(target <= 1.5 GiB; new process from cache {b['peak_mib']:.0f} MiB, a running worker after a persisted "
        f"cycle {p['peak_idle_mib']:.0f} MiB; peer: lifetimes alone {lt.get('peak_mib', float('nan')):.0f} MiB)"
    )


def default_cache_file(url: str) -> Path:
    from worker.store.snapshot import default_cache_path

    path = default_cache_path(url)
    assert path is not None, "--skip-cold needs a SQLite store"
    return path


def _load(url: str, customers: int, orders: int) -> dict[str, float]:
    load_store(url, generate(customers, orders))
    return {}


if __name__ == "__main__":
    sys.exit(main())
