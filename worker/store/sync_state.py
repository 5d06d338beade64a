"""Per process: each mapping's desired identities at the results version it last looked at, and the
identities whose diff may have changed since its last plan (see ``worker/sync.py``, ``MappingSync.plan``).

A cache, never a source of truth: it is keyed by the database instance and checked against the
results version, the mapping's sync runs and writes made in this process; anything it cannot account
for makes the next plan a full one.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.kernel.records import Member
from worker.store.base import StoreBase


@dataclass
class MappingState:
    """Desired identities of one mapping (segment ∩ eligible, by the destination's identity rule)."""

    rule: tuple[Any, ...]
    instance: str
    version: int
    segment: set[str]
    desired: dict[str, Member]
    key_identity: dict[str, str]
    reason_of: dict[str, str]
    ineligible: Counter[str]
    #: identities held by more than one key: every key's member (the largest key's is desired)
    owners: dict[str, dict[str, Member]] = field(default_factory=dict)
    #: identities whose desired state changed since the last plan
    dirty: set[str] = field(default_factory=set)
    #: the last plan's adds and removes, and rejections: re-examined by the next plan
    pending: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    #: identities written outside the engine in this process since the last plan
    touched: set[str] = field(default_factory=set)
    #: the next plan must look at every identity
    full: bool = True
    #: the mapping's epoch (writes outside plans, any process) the last plan accounted for
    epoch: int = -1
    checked_at: datetime | None = None

    def lookup(self, key: str) -> tuple[str, Any] | None:
        """(identity, member) or ("", reason) for a key in the segment with a profile, else None."""
        identity = self.key_identity.get(key)
        if identity is not None:
            member = self.desired[identity]
            if member.key != key:
                member = self.owners[identity][key]
            return identity, member
        reason = self.reason_of.get(key)
        return ("", reason) if reason is not None else None

    def put(self, key: str, member: Member, identity: str | None, reason: str | None) -> None:
        if reason is not None:
            self.reason_of[key] = reason
            self.ineligible[reason] += 1
            return
        assert identity is not None
        self.key_identity[key] = identity
        self.dirty.add(identity)
        current = self.desired.get(identity)
        if current is None or current.key == key:
            self.desired[identity] = member
            if identity in self.owners:
                self.owners[identity][key] = member
            return
        owners = self.owners.setdefault(identity, {current.key: current})
        owners[key] = member
        self.desired[identity] = owners[max(owners)]

    def drop(self, key: str) -> None:
        reason = self.reason_of.pop(key, None)
        if reason is not None:
            self.ineligible[reason] -= 1
            if self.ineligible[reason] <= 0:
                del self.ineligible[reason]
            return
        identity = self.key_identity.pop(key, None)
        if identity is None:
            return
        self.dirty.add(identity)
        owners = self.owners.get(identity)
        if owners is None:
            del self.desired[identity]
            return
        owners.pop(key, None)
        self.desired[identity] = owners[max(owners)]
        if len(owners) == 1:
            del self.owners[identity]


@dataclass
class SyncCache:
    mappings: dict[str, MappingState] = field(default_factory=dict)
    #: every profile at one (instance, version), shared by the mappings rebuilt at that version
    profiles: tuple[str, int, dict[str, Member]] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


_CACHES: dict[str, SyncCache] = {}
_LOCK = threading.Lock()


def cache_for(store: StoreBase) -> SyncCache:
    key = store.engine.url.render_as_string(hide_password=True)
    with _LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = SyncCache()
        return cache


def touch(store: StoreBase, mapping: str, identities: Iterable[str] | None) -> None:
    """Acknowledged or rejected rows of ``mapping`` were written outside a sync's plan: the next plan
    re-examines ``identities`` (or every identity, for None)."""
    cache = cache_for(store)
    with cache.lock:
        state = cache.mappings.get(mapping)
        if state is None:
            return
        if identities is None:
            state.full = True
        else:
            state.touched.update(identities)


def forget() -> None:
    """Drop every cached state (tests: a new process)."""
    with _LOCK:
        _CACHES.clear()
