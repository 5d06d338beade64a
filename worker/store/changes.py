"""What recompute results changed, version by version, kept in this process's memory only.

``persist`` writes the results as changes and bumps ``results_state.version``; it records here, for
that version, the keys whose profile changed or vanished (with the new profile), the keys that joined
or left each segment, and the segments dropped. A sync that last looked at version ``v`` replays the
deltas ``v+1 .. now`` instead of re-reading segments and profiles. Any version not recorded here
(another process wrote, an erasure, the frame-based ``replace_*`` methods, a delta too large to keep)
makes the log answer ``None``: the reader rebuilds from the tables. Nothing here is durable.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from worker.store.base import StoreBase as Store

#: most profile entries kept over all versions (a first write of every profile is not kept)
MAX_ENTRIES = 400_000
MAX_VERSIONS = 16

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
    """The deltas of versions ``since+1 .. until``, or None when any of them is not known here."""
    with _LOCK:
        log = _LOGS.get(store_key(store))
        if log is None or log.instance != instance or until < since:
            return None
        out = [log.deltas.get(v) for v in range(since + 1, until + 1)]
    return None if any(d is None for d in out) else [d for d in out if d is not None]
