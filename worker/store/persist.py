"""Persist recompute results (profiles, segment membership) in proportion to what changed.

The process keeps what it last wrote (:class:`Written`: key codes, profile column codes and a
membership matrix, on the snapshot's string dictionary) and diffs the new table against it on integer
codes; only changed or new profiles are upserted, vanished keys deleted, and membership joins/leaves
written, each as one cached single-row statement run as ``executemany``.

The kept state is trusted only while ``results_state.version`` is the one this process wrote (every
writer of ``profiles`` / ``segment_members`` bumps it: erasure, the frame-based ``replace_*`` methods,
another worker) and the snapshot still uses the same dictionary (a reload starts a new one). Otherwise
(cold start) the current tables are read once and compared on strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy.engine import Connection

from worker.segments.facts import CONSENTS, Interner
from worker.segments.table import CustomerTable
from worker.store import changes as change_log
from worker.store.db import Store

Mask = npt.NDArray[np.bool_]
BATCH = 50_000
FETCH = 200_000
PROFILE_COLUMNS = ("email", "phone", "first_name", "last_name", "country", "email_consent")


@dataclass(eq=False)
class Written:
    """What this process last wrote: rows aligned with ``keys`` (codes in ``strings``)."""

    strings: Interner
    version: int
    keys: npt.NDArray[np.int64]
    profile: npt.NDArray[np.int32]  # (n, 6): codes of PROFILE_COLUMNS (email_consent: index into CONSENTS)
    names: tuple[str, ...]
    members: Mask  # (n, len(names))


@dataclass
class _Before:
    """The stored state expressed on the new table's rows, plus stored keys the table no longer has."""

    same: Mask  # stored profile identical to the new one
    member: Mask  # (n, len(names)) stored membership
    gone_profiles: list[str]
    gone_members: dict[str, list[str]]
    stale: list[str]  # stored segments no longer configured


def profile_codes(table: CustomerTable) -> npt.NDArray[np.int32]:
    f = table.facts
    out = np.empty((table.n, len(PROFILE_COLUMNS)), dtype=np.int32)
    columns: list[npt.NDArray[Any]] = [
        table.email_code,
        table.phone_code,
        table._from_customers(f.c_first),
        table._from_customers(f.c_last),
        table._from_customers(f.c_country),
        table.consent,
    ]
    for j, column in enumerate(columns):
        out[:, j] = column
    return out


def _texts(table: CustomerTable, profile: npt.NDArray[np.int32], rows: npt.NDArray[np.int64]) -> list[list[Any]]:
    """Profile values of ``rows`` as lists of str/None (email_consent always set)."""
    strings = table.facts.strings.array()
    out: list[list[Any]] = [strings[profile[rows, j]].tolist() for j in range(len(PROFILE_COLUMNS) - 1)]
    out.append(np.asarray(CONSENTS, dtype=object)[profile[rows, -1]].tolist())
    return out


def _cold(
    conn: Connection,
    table: CustomerTable,
    profile: npt.NDArray[np.int32],
    key_text: npt.NDArray[Any],
    names: Sequence[str],
) -> _Before:
    """Read the stored tables once and express them on the new table's rows (strings compared)."""
    n = table.n
    index = pd.Index(key_text)
    same = np.zeros(n, dtype=bool)
    gone_profiles: list[str] = []
    # chunk by chunk (values of the chunk's rows only): at 1M customers, whole columns of strings
    # and whole segments' key lists held at once cost hundreds of MB (a worker's first cycle)
    result = conn.exec_driver_sql(f"SELECT customer_key, {', '.join(PROFILE_COLUMNS)} FROM profiles")
    while rows := result.fetchmany(FETCH):
        cols = list(zip(*rows, strict=True))
        keys = np.asarray(cols[0], dtype=object)
        pos = index.get_indexer(keys)
        found = pos >= 0
        gone_profiles += keys[~found].tolist()
        at = pos[found]
        current = _texts(table, profile, at)
        equal = np.ones(len(at), dtype=bool)
        for j in range(len(PROFILE_COLUMNS)):
            equal &= np.asarray(current[j], dtype=object) == np.asarray(cols[j + 1], dtype=object)[found]
        same[at[equal]] = True
    member = np.zeros((n, len(names)), dtype=bool)
    gone_members: dict[str, list[str]] = {}
    marker = _marker(conn)
    for s, name in enumerate(names):
        gone_members[name] = []
        result = conn.exec_driver_sql(f"SELECT customer_key FROM segment_members WHERE segment = {marker}", (name,))
        while chunk := result.fetchmany(FETCH):
            stored = np.asarray([row[0] for row in chunk], dtype=object)
            pos = index.get_indexer(stored)
            member[pos[pos >= 0], s] = True
            gone_members[name] += stored[pos < 0].tolist()
    segments = conn.exec_driver_sql("SELECT DISTINCT segment FROM segment_members").scalars().all()
    stale = sorted(set(segments) - set(names))
    return _Before(same, member, gone_profiles, gone_members, stale)


def _warm(written: Written, table: CustomerTable, profile: npt.NDArray[np.int32], names: Sequence[str]) -> _Before:
    """The kept state on the new table's rows, by key code (no string touched but vanished keys')."""
    n = table.n
    size = max(len(table.facts.strings), int(written.keys.max(initial=-1)) + 1)
    pos = np.full(size, -1, dtype=np.int64)
    pos[written.keys] = np.arange(len(written.keys), dtype=np.int64)
    p = pos[table.keys]
    hit = np.flatnonzero(p >= 0)
    old = p[hit]
    same = np.zeros(n, dtype=bool)
    same[hit] = (written.profile[old] == profile[hit]).all(axis=1)
    seen = np.zeros(len(written.keys), dtype=bool)
    seen[old] = True
    gone = np.flatnonzero(~seen)
    gone_text = table.facts.strings.array()[written.keys[gone]]
    member = np.zeros((n, len(names)), dtype=bool)
    gone_members: dict[str, list[str]] = {}
    columns = {name: j for j, name in enumerate(written.names)}
    for s, name in enumerate(names):
        j = columns.get(name)
        if j is None:
            gone_members[name] = []
            continue
        member[hit, s] = written.members[old, j]
        gone_members[name] = gone_text[written.members[gone, j]].tolist()
    stale = [name for name in written.names if name not in set(names)]
    return _Before(same, member, gone_text.tolist(), gone_members, stale)


def _marker(conn: Connection) -> str:
    style = conn.dialect.paramstyle
    if style == "qmark":
        return "?"
    if style in ("format", "pyformat"):
        return "%s"
    raise NotImplementedError(f"persist: driver paramstyle {style!r}")


def _many(conn: Connection, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """One statement, executemany in batches (compiled once by the driver)."""
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            conn.exec_driver_sql(sql, batch)
            batch = []
    if batch:
        conn.exec_driver_sql(sql, batch)


def _copy(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """PostgreSQL's own bulk path: ``COPY ... FROM STDIN`` on the transaction's connection."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


def _insert(conn: Connection, mark: str, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Rows that are new to ``table``: COPY on PostgreSQL (the first write at 1M customers is
    millions of rows), one cached statement run as executemany elsewhere."""
    if conn.dialect.name == "postgresql":
        _copy(conn, table, columns, rows)
    else:
        _many(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})", rows)


def _upsert_profiles(conn: Connection, mark: str, rows: Iterable[tuple[Any, ...]]) -> None:
    columns = ("customer_key", *PROFILE_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in PROFILE_COLUMNS)
    if conn.dialect.name == "postgresql":  # COPY into a scratch table, then one upsert from it
        conn.exec_driver_sql("CREATE TEMP TABLE profiles_in (LIKE profiles INCLUDING DEFAULTS) ON COMMIT DROP")
        _copy(conn, "profiles_in", columns, rows)
        conn.exec_driver_sql(
            f"INSERT INTO profiles ({', '.join(columns)}) SELECT {', '.join(columns)} FROM profiles_in "
            f"ON CONFLICT (customer_key) DO UPDATE SET {updates}"
        )
        conn.exec_driver_sql("DROP TABLE profiles_in")
        return
    marks = ", ".join([mark] * len(columns))
    _many(
        conn,
        f"INSERT INTO profiles ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT (customer_key) DO UPDATE SET {updates}",
        rows,
    )


def persist(
    store: Store, table: CustomerTable, masks: Mapping[str, Mask], written: Written | None
) -> tuple[dict[str, dict[str, int]], Written]:
    """Write profiles and memberships of ``table``/``masks``, changes only; returns per segment
    ``size``/``joined``/``left`` (as :meth:`Store.replace_segments`) and the state to keep."""
    names = tuple(masks)
    profile = profile_codes(table)
    key_text = table.text(table.keys)
    changes: dict[str, dict[str, int]] = {}
    with store.engine.begin() as conn:
        version = store.bump_results(conn)  # also takes the write lock: no other writer until commit
        if written is not None and written.version == version - 1 and written.strings is table.facts.strings:
            before = _warm(written, table, profile, names)
        else:
            before = _cold(conn, table, profile, key_text, names)
        mark = _marker(conn)
        if before.gone_profiles:
            _many(conn, f"DELETE FROM profiles WHERE customer_key = {mark}", ((k,) for k in before.gone_profiles))
        rows = np.flatnonzero(~before.same)
        if len(rows):
            columns = [key_text[rows].tolist(), *_texts(table, profile, rows)]
            _upsert_profiles(conn, mark, zip(*columns, strict=True))
        leave = f"DELETE FROM segment_members WHERE segment = {mark} AND customer_key = {mark}"
        member = np.zeros((table.n, len(names)), dtype=bool)
        moved = ~before.same
        joins: dict[str, list[str]] = {}
        leaves: dict[str, list[str]] = {}
        for s, name in enumerate(names):
            new, old = masks[name], before.member[:, s]
            member[:, s] = new
            left = key_text[old & ~new].tolist() + before.gone_members.get(name, [])
            joined = key_text[new & ~old].tolist()
            moved |= new & ~old
            _many(conn, leave, ((name, k) for k in left))
            if joined:
                _insert(conn, mark, "segment_members", ("segment", "customer_key"), ((name, k) for k in joined))
            joins[name], leaves[name] = joined, left
            changes[name] = {"size": int(new.sum()), "joined": len(joined), "left": len(left)}
        for name in before.stale:
            conn.exec_driver_sql(f"DELETE FROM segment_members WHERE segment = {mark}", (name,))
        changed = key_text[np.flatnonzero(~before.same)].tolist()
        change_log.write(conn, version, changed, before.gone_profiles, joins, leaves, before.stale)
        instance = conn.exec_driver_sql("SELECT instance FROM ingest_state").scalar()
    kept = Written(table.facts.strings, version, table.keys.copy(), profile, names, member)
    if instance is not None:
        _record(store, str(instance), version, table, profile, key_text, moved, before, joins, leaves)
    return changes, kept


def _record(
    store: Store,
    instance: str,
    version: int,
    table: CustomerTable,
    profile: npt.NDArray[np.int32],
    key_text: npt.NDArray[Any],
    moved: Mask,
    before: _Before,
    joins: dict[str, list[str]],
    leaves: dict[str, list[str]],
) -> None:
    """The change log entry of ``version`` (committed): profiles changed or joining a segment, with
    their values, vanished keys, joins and leaves (worker/store/changes.py)."""
    rows = np.flatnonzero(moved)
    if len(rows) + len(before.gone_profiles) > change_log.MAX_ENTRIES:
        change_log.unknown(store, instance, version)
        return
    profiles: dict[str, change_log.Profile] = dict.fromkeys(before.gone_profiles)
    values = _texts(table, profile, rows)
    profiles.update(zip(key_text[rows].tolist(), zip(*values, strict=True), strict=True))
    delta = change_log.Delta(version, profiles, joins, leaves, frozenset(before.stale))
    change_log.record(store, instance, delta)
