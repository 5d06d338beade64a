"""The sync engine: desired ∩ eligible vs acknowledged, pushed in destination-sized batches.

After each accepted batch the acknowledged state is updated for exactly the identities the
destination accepted, in its own transaction; a crash anywhere leaves a subset-consistent record
and the next run converges. Rejected members are recorded with their reason and not re-sent until
their identity changes or a full resync asks for it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.destinations.base import BatchResult, Destination, MappingOptions
from connectors.errors import ConfigError, ConnectorError, LongPauseError, PermanentError
from connectors.records import Member
from worker.config import MappingConfig
from worker.diff import batches, membership_diff
from worker.store import Store

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


@dataclass
class SyncResult:
    mapping: str
    status: str = "ok"
    segment_size: int = 0
    desired: int = 0
    added: int = 0
    removed: int = 0
    rejected: int = 0
    skipped_rejected: int = 0
    pending_adds: int = 0
    pending_removes: int = 0
    ineligible: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    error: str | None = None
    destination_stats: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {
            "segment_size": self.segment_size,
            "desired": self.desired,
            "added": self.added,
            "removed": self.removed,
            "rejected": self.rejected,
            "skipped_rejected": self.skipped_rejected,
            "pending_adds": self.pending_adds,
            "pending_removes": self.pending_removes,
            "ineligible": dict(self.ineligible),
            "seconds": round(self.seconds, 3),
            **{f"dest_{k}": v for k, v in self.destination_stats.items()},
        }


def desired_identities(
    destination: Destination, members: dict[str, Member], options: MappingOptions
) -> tuple[dict[str, Member], Counter[str]]:
    """Identity → member for everyone eligible; the ineligible counted by reason."""
    desired: dict[str, Member] = {}
    ineligible: Counter[str] = Counter()
    for member in members.values():
        reason = destination.ineligible_reason(member)
        if reason is not None:
            ineligible[reason] += 1
            continue
        desired[destination.identity(member, options)] = member
    return desired, ineligible


class MappingSync:
    """One sync of one mapping; ``progress`` is called after every batch (lock renewal, live status)."""

    def __init__(
        self,
        store: Store,
        mapping: MappingConfig,
        destination: Destination,
        options: MappingOptions,
        *,
        run_id: int | None = None,
        progress: Progress | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.mapping = mapping
        self.destination = destination
        self.options = options
        self.run_id = run_id
        self.progress = progress or (lambda counts: None)
        self.clock = clock

    def run(self, *, full: bool = False) -> SyncResult:
        started = time.monotonic()
        result = SyncResult(self.mapping.name)
        try:
            self._run(result, full)
        except LongPauseError as exc:
            resume = self.clock() + timedelta(seconds=exc.wait_seconds or 60)
            self.store.pause(self.mapping.name, resume, exc.message)
            result.status, result.error = "paused", f"{exc.message}; resumes after {resume.isoformat()}"
        except ConfigError as exc:
            result.status, result.error = "needs_attention", exc.message
        except ConnectorError as exc:
            result.status, result.error = "failed", exc.message
        finally:
            result.seconds = time.monotonic() - started
            result.destination_stats = self.destination.stats()
        return result

    def _run(self, result: SyncResult, full: bool) -> None:
        name = self.mapping.name
        keys = self.store.segment_keys(self.mapping.segment)
        result.segment_size = len(keys)
        members = self.store.members(keys)
        desired, result.ineligible = desired_identities(self.destination, members, self.options)
        result.desired = len(desired)
        if full:
            self.store.clear_rejections(name)
        acknowledged = self.store.acknowledged(name)
        if full and not self.destination.supports_replace:
            # re-send everyone we want: adds are idempotent, and this repairs drift at the destination
            acknowledged = {i: k for i, k in acknowledged.items() if i not in desired}
        rejected = set(self.store.rejected(name))
        if full and self.destination.supports_replace:
            self._replace(result, desired, acknowledged)
            return
        diff = membership_diff(set(desired), set(acknowledged), additive=self.mapping.mode == "additive", skip=rejected)
        result.skipped_rejected = len((set(desired) - set(acknowledged)) & rejected)
        result.pending_adds, result.pending_removes = len(diff.adds), len(diff.removes)
        self.progress(result.counts())
        size = self.destination.batch_size
        for batch in batches(diff.adds, size):
            outcome = self.destination.add(self.mapping.audience, [desired[i] for i in batch], self.options)
            self._record(result, "add", outcome, {i: desired[i].key for i in batch})
        for batch in batches(diff.removes, size):
            try:
                outcome = self.destination.remove(self.mapping.audience, batch, self.options)
            except PermanentError as exc:
                if isinstance(exc, ConfigError):
                    raise
                # a batch the destination refuses as a whole: record every member, keep going
                outcome = BatchResult(rejected=[])
                self._reject_all(result, "remove", batch, acknowledged, exc)
                continue
            self._record(result, "remove", outcome, {i: acknowledged[i] for i in batch})
        if result.rejected:
            result.status = "partial"

    def _replace(self, result: SyncResult, desired: dict[str, Member], acknowledged: dict[str, str]) -> None:
        ordered = sorted(desired)
        size = self.destination.batch_size
        outcome = self.destination.replace(
            self.mapping.audience,
            ([desired[i] for i in chunk] for chunk in batches(ordered, size)),
            self.options,
        )
        accepted = set(outcome.accepted)
        gone = [i for i in acknowledged if i not in accepted]
        self.store.ack_removed(self.mapping.name, gone)
        self.store.ack_added(self.mapping.name, [(i, desired[i].key) for i in ordered if i in accepted])
        self._record_rejections(result, "add", outcome, {i: desired[i].key for i in ordered})
        result.added = len(accepted - set(acknowledged))
        result.removed = len(gone)
        if result.rejected:
            result.status = "partial"

    def _record(self, result: SyncResult, op: str, outcome: BatchResult, keys: dict[str, str]) -> None:
        accepted = [i for i in outcome.accepted if i in keys]
        if op == "add":
            self.store.ack_added(self.mapping.name, [(i, keys[i]) for i in accepted])
            result.added += len(accepted)
            result.pending_adds -= len(keys)
        else:
            self.store.ack_removed(self.mapping.name, accepted)
            result.removed += len(accepted)
            result.pending_removes -= len(keys)
        self._record_rejections(result, op, outcome, keys)
        self.progress(result.counts())

    def _record_rejections(self, result: SyncResult, op: str, outcome: BatchResult, keys: dict[str, str]) -> None:
        rows = [
            {
                "identity": r.identity,
                "customer_key": keys.get(r.identity, ""),
                "operation": op,
                "code": r.code,
                "reason": r.reason,
            }
            for r in outcome.rejected
        ]
        if rows:
            self.store.record_rejections(self.mapping.name, self.run_id, rows)
            result.rejected += len(rows)

    def _reject_all(
        self, result: SyncResult, op: str, batch: list[str], keys: dict[str, str], exc: ConnectorError
    ) -> None:
        rows = [
            {
                "identity": i,
                "customer_key": keys.get(i, ""),
                "operation": op,
                "code": exc.code or "refused",
                "reason": exc.message,
            }
            for i in batch
        ]
        self.store.record_rejections(self.mapping.name, self.run_id, rows)
        result.rejected += len(rows)
        result.pending_removes -= len(batch)
        log.warning("mapping %s: %s of %d members refused: %s", self.mapping.name, op, len(batch), exc.message)
