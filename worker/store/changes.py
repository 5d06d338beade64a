"""What recompute results changed, version by version: in this process's memory, and in the store.

``persist`` writes the results as changes and bumps ``results_state.version``; it records, for that
version, the keys whose profile changed or vanished, the keys that joined or left each segment, and
the segments dropped: here with the new profiles (the process that recomputed replays them without a
read), and in the store's ``results_log`` tables in the same transaction as the results (a sync in
another process, a Celery worker, replays those and reads the changed profiles by key). A sync that
last looked at version ``v`` replays the deltas ``v+1 .. now`` instead of re-reading segments and
profiles. A version neither log holds (an erasure, the frame-based ``replace_*`` methods, a delta too
large to keep) makes :func:`between` answer ``None``: the reader rebuilds from the tables.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from worker.store import schema
from worker.store.base import StoreBase as Store
from worker.store.base import utcnow

#: most profile entries kept over all versions (a first write of every profile is not kept)
MAX_ENTRIES = 400_000
MAX_VERSIONS = 16
#: versions the store's log keeps (a Celery worker's syncs lag the recompute by a version or two)
STORED_VERSIONS = 32

Profile = tuple[str | None, ...] | None  # PROFILE_COLUMNS values; None: the profile is gone


@dataclass(frozen=True)
class Delta:
    version: int
    #: key -> its new profile (changed, new, or joined a segment) or None (vanished)
    profiles: Mapping[str, Profile]
    joined: Mapping[str, Sequence[str]]
    left: Mapping[str, Sequence[str]]
    #: segments no longer stored at all
    stale: frozenset[str] = frozenset()


@dataclass
class _Log:
    instance: str
    deltas: dict[int, Delta] = field(default_factory=dict)


_LOGS: dict[str, _Log] = {}
_LOCK = threading.Lock()


def store_key(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=True)


def record(store: Store, instance: str, delta: Delta) -> None:
    """Keep ``delta`` (written and committed by this process) unless it is too large."""
    with _LOCK:
        log = _LOGS.get(store_key(store))
        if log is None or log.instance != instance:
            log = _LOGS[store_key(store)] = _Log(instance)
        if len(delta.profiles) > MAX_ENTRIES:
            log.deltas.pop(delta.version, None)
            return
        log.deltas[delta.version] = delta
        while len(log.deltas) > MAX_VERSIONS or sum(len(d.profiles) for d in log.deltas.values()) > MAX_ENTRIES:
            del log.deltas[min(log.deltas)]


def unknown(store: Store, instance: str, version: int) -> None:
    """``version`` was written here but is too large to keep: readers of it rebuild."""
    with _LOCK:
        log = _LOGS.get(store_key(store))
        if log is not None and log.instance == instance:
            log.deltas.pop(version, None)


def between(store: Store, instance: str, since: int, until: int) -> list[Delta] | None:
    """The deltas of versions ``since+1 .. until``: from this process's memory, else from the store;
    None when either lacks one of them."""
    if until < since:
        return None
    with _LOCK:
        log = _LOGS.get(store_key(store))
        out = [log.deltas.get(v) for v in range(since + 1, until + 1)] if log and log.instance == instance else [None]
    if all(d is not None for d in out):
        return [d for d in out if d is not None]
    return stored_between(store, since, until)


def write(
    conn: Connection,
    version: int,
    changed: Sequence[str],
    gone: Sequence[str],
    joins: Mapping[str, Sequence[str]],
    leaves: Mapping[str, Sequence[str]],
    stale: Sequence[str],
) -> None:
    """Record ``version`` in the store's log (inside the transaction writing its results); a delta of
    more than :data:`MAX_ENTRIES` keys is recorded as not kept. Old versions are dropped."""
    size = len(changed) + len(gone) + sum(map(len, joins.values())) + sum(map(len, leaves.values()))
    complete = size <= MAX_ENTRIES
    conn.execute(schema.results_log.insert().values(version=version, complete=complete, at=utcnow()))
    keep = version - STORED_VERSIONS
    conn.execute(delete(schema.results_log_keys).where(schema.results_log_keys.c.version <= keep))
    conn.execute(delete(schema.results_log).where(schema.results_log.c.version <= keep))
    if not complete:
        return
    rows = [(k, "", "profile") for k in changed] + [(k, "", "gone") for k in gone]
    for segment, keys in joins.items():
        rows += [(k, segment, "join") for k in keys]
    for segment, keys in leaves.items():
        rows += [(k, segment, "leave") for k in keys]
    rows += [("", segment, "stale") for segment in stale]
    if rows:
        conn.execute(
            schema.results_log_keys.insert(),
            [{"version": version, "customer_key": k, "segment": g, "change": c} for k, g, c in rows],
        )


def stored_between(store: Store, since: int, until: int) -> list[Delta] | None:
    """The deltas of versions ``since+1 .. until`` from the store's log, profiles read as they are now
    (the newest values are what a replay up to ``until`` or later needs)."""
    log, keys = schema.results_log.c, schema.results_log_keys.c
    with store.engine.connect() as conn:
        kept = dict(
            conn.execute(select(log.version, log.complete).where(log.version > since, log.version <= until)).all()
        )
        if any(not kept.get(v) for v in range(since + 1, until + 1)):
            return None
        found = conn.execute(
            select(keys.version, keys.customer_key, keys.segment, keys.change).where(
                keys.version > since, keys.version <= until
            )
        ).all()
    changed = {k for _, k, _, c in found if c == "profile"}
    current = store.profile_values(sorted(changed)) if changed else {}  # type: ignore[attr-defined]
    deltas = {v: (dict[str, Profile](), dict[str, list[str]](), dict[str, list[str]](), set[str]()) for v in kept}
    for version, key, segment, change in found:
        profiles, joined, left, stale = deltas[version]
        if change == "profile":
            profiles[key] = current.get(key)
        elif change == "gone":
            profiles[key] = None
        elif change == "join":
            joined.setdefault(segment, []).append(key)
        elif change == "leave":
            left.setdefault(segment, []).append(key)
        else:
            stale.add(segment)
    return [Delta(v, p, j, lf, frozenset(st)) for v, (p, j, lf, st) in sorted(deltas.items())]
