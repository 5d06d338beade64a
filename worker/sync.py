"""The sync engine: desired ∩ eligible vs what the destination may hold, pushed in destination-sized batches.

Every batch is written ahead as in flight, sent, then settled by the destination's answer in one
transaction (accepted identities acknowledged or forgotten, rejections recorded, intents cleared).
A crash anywhere leaves a record of what the destination *may* hold, and the next run converges.
Rejected members are recorded with their reason and not re-sent until their identity changes or a
full resync asks for it. Erased people are removed whatever the mapping's mode.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.kernel.destination import BatchResult, Destination, MappingOptions, Rejection
from connectors.kernel.errors import ConfigError, ConnectorError, ContractViolation, LongPauseError, PermanentError
from connectors.kernel.records import Member
from worker.config import MappingConfig
from worker.diff import Diff, batches, membership_diff
from worker.store import Store

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
#: how long before a platform would drop a member (``membership_ttl_days``) the engine re-sends it
REFRESH_MARGIN_DAYS = 30


@dataclass
class SyncResult:
    mapping: str
    status: str = "ok"
    segment_size: int = 0
    eligible: int = 0
    added: int = 0
    removed: int = 0
    rejected: int = 0
    skipped_rejected: int = 0
    pending_adds: int = 0
    pending_removes: int = 0
    #: identities of erased people removed in this run
    erased_removed: int = 0
    #: acknowledged members re-sent before the platform's membership lifetime ran out
    refreshed: int = 0
    ineligible: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    error: str | None = None
    #: the run stopped at a checkpoint (time budget) with work left: a continuation picks it up
    more: bool = False
    run_id: int | None = None
    #: a sync was requested (or upgraded to full) while this one ran: another run is owed
    owed_again: bool = False
    destination_stats: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {
            "segment_size": self.segment_size,
            "eligible": self.eligible,
            "added": self.added,
            "removed": self.removed,
            "rejected": self.rejected,
            "skipped_rejected": self.skipped_rejected,
            "pending_adds": self.pending_adds,
            "pending_removes": self.pending_removes,
            "erased_removed": self.erased_removed,
            "refreshed": self.refreshed,
            "ineligible": dict(self.ineligible),
            "seconds": round(self.seconds, 3),
            **{f"dest_{k}": v for k, v in self.destination_stats.items()},
        }


def desired_identities(
    destination: Destination, members: Iterable[Member], options: MappingOptions
) -> tuple[dict[str, Member], Counter[str]]:
    """Identity → member for everyone eligible, the ineligible counted by reason.

    The one eligibility rule: the sync, the dry run and the preview all call this.
    """
    desired: dict[str, Member] = {}
    ineligible: Counter[str] = Counter()
    for member in members:
        reason = destination.ineligible_reason(member)
        if reason is not None:
            ineligible[reason] += 1
            continue
        desired[destination.identity(member, options)] = member
    return desired, ineligible


class StoreMemory:
    """What a destination remembers for one mapping (e.g. the segment it created), kept in the store."""

    def __init__(self, store: Store, mapping: str) -> None:
        self.store, self.mapping = store, mapping
        self._values = store.remembered(mapping)

    def get(self, key: str) -> Any:
        return self._values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.store.remember(self.mapping, key, value)
        self._values[key] = value


@dataclass
class Plan:
    """A mapping's next sync, computed without sending anything (the dry run shows it as it is)."""

    desired: dict[str, Member]
    ineligible: Counter[str]
    segment_size: int
    diff: Diff
    #: identity -> customer key for every identity the destination may hold
    keys: dict[str, str]
    erased: dict[str, int]
    skipped_rejected: int
    #: acknowledged members re-sent because their membership would expire at the platform
    refreshed: int = 0


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
        deadline: float | None = None,
    ) -> None:
        self.store = store
        self.mapping = mapping
        self.destination = destination
        self.options = options
        self.run_id = run_id
        self.progress = progress or (lambda counts: None)
        self.clock = clock
        #: monotonic time after which no new batch starts (the rest continues in a new task)
        self.deadline = deadline

    @property
    def additive(self) -> bool:
        return self.mapping.mode == "additive" or not self.destination.removes_members(self.options)

    def plan(self, *, full: bool = False, full_since: datetime | None = None, only_erasures: bool = False) -> Plan:
        name = self.mapping.name
        keys = self.store.segment_keys(self.mapping.segment)
        desired, ineligible = desired_identities(self.destination, self.store.members(keys).values(), self.options)
        acknowledged = self.store.acknowledged(name)
        flight = self.store.inflight(name)
        erased = {i: m.erasure_id for i, m in self.store.erased_members(name).items()}
        # a full resync forgets old rejections; its continuation skips the ones it met itself
        rejected = set() if full and full_since is None else set(self.store.rejected(name))
        if only_erasures:
            diff = membership_diff(set(), set(acknowledged), additive=True, in_flight={}, erased=set(erased))
            diff = Diff(adds=[], removes=diff.removes, unchanged=0)
        else:
            diff = membership_diff(
                set(desired),
                set(acknowledged),
                additive=self.additive,
                skip=rejected,
                in_flight={i: f.op for i, f in flight.items()},
                erased=set(erased),
                full=full,
                resent=self.store.acknowledged_since(name, full_since) if full and full_since else frozenset(),
            )
        refresh = self._due_refresh(set(desired) - rejected) if not (full or only_erasures) else set()
        if refresh - set(diff.adds):
            diff = Diff(adds=sorted(set(diff.adds) | refresh), removes=diff.removes, unchanged=diff.unchanged)
        held_keys = {i: f.customer_key for i, f in flight.items()} | acknowledged
        skipped = len((set(desired) - set(acknowledged)) & rejected)
        return Plan(desired, ineligible, len(keys), diff, held_keys, erased, skipped, len(refresh))

    def _due_refresh(self, desired: set[str]) -> set[str]:
        """Members whose membership would expire at the platform soon (Customer Match: 540 days)
        are re-sent, :data:`REFRESH_MARGIN_DAYS` before they would lapse."""
        ttl = self.destination.membership_ttl_days
        if not ttl:
            return set()
        cutoff = self.clock() - timedelta(days=max(1, ttl - REFRESH_MARGIN_DAYS))
        return self.store.acknowledged_before(self.mapping.name, cutoff) & desired

    def run(self, *, full: bool = False, full_since: datetime | None = None, only_erasures: bool = False) -> SyncResult:
        started = time.monotonic()
        result = SyncResult(self.mapping.name)
        self.destination.memory = StoreMemory(self.store, self.mapping.name)
        try:
            if self.run_id is not None:
                self.store.claim_fence(self.mapping.name, self.run_id)
            self._run(result, full, full_since, only_erasures)
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

    def _run(self, result: SyncResult, full: bool, full_since: datetime | None, only_erasures: bool) -> None:
        if full and full_since is None:
            self.store.clear_rejections(self.mapping.name)
        plan = self.plan(full=full, full_since=full_since, only_erasures=only_erasures)
        result.segment_size, result.eligible, result.ineligible = (
            plan.segment_size,
            len(plan.desired),
            plan.ineligible,
        )
        result.skipped_rejected = plan.skipped_rejected
        result.refreshed = plan.refreshed
        # a native replace needs someone to replace with: an empty segment is a plain removal of all
        if full and self.destination.supports_replace and plan.desired and not (only_erasures or self.additive):
            self._replace(result, plan)
            return
        result.pending_adds, result.pending_removes = len(plan.diff.adds), len(plan.diff.removes)
        self.progress(result.counts())
        size = self.destination.batch_size
        for batch in batches(plan.diff.adds, size):
            if self._out_of_time(result):
                return
            sent = {i: plan.desired[i].key for i in batch}
            self.store.begin_batch(self.mapping.name, self.run_id, "add", [(i, k, None) for i, k in sent.items()])
            try:
                outcome = self.destination.add(self.mapping.audience, [plan.desired[i] for i in batch], self.options)
            except PermanentError as exc:
                outcome = self._refused_whole(exc, "add", batch)
            self._settle(result, "add", outcome, sent, plan.erased)
        for batch in batches(plan.diff.removes, size):
            if self._out_of_time(result):
                return
            sent = {i: plan.keys.get(i, "") for i in batch}
            intents = [(i, k, plan.erased.get(i)) for i, k in sent.items()]
            self.store.begin_batch(self.mapping.name, self.run_id, "remove", intents)
            try:
                outcome = self.destination.remove(self.mapping.audience, batch, self.options)
            except PermanentError as exc:
                outcome = self._refused_whole(exc, "remove", batch)
            self._settle(result, "remove", outcome, sent, plan.erased)
        if result.rejected:
            result.status = "partial"

    def _refused_whole(self, exc: PermanentError, op: str, batch: list[str]) -> BatchResult:
        """A batch the destination refuses as a whole: every member recorded with why, the run goes on.
        A person must act on a config error (credentials, permissions): that stops the run instead."""
        if isinstance(exc, ConfigError):
            raise exc
        log.warning("mapping %s: %s of %d members refused: %s", self.mapping.name, op, len(batch), exc.message)
        return BatchResult(rejected=[Rejection(i, exc.message, exc.code or "refused") for i in batch])

    def _out_of_time(self, result: SyncResult) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            result.more = True
            return True
        return False

    def _replace(self, result: SyncResult, plan: Plan) -> None:
        """A native full replace (Meta ``usersreplace``): every desired identity is written ahead as an
        add, since the destination may hold all of them once the final batch is applied."""
        ordered = sorted(plan.desired)
        name = self.mapping.name
        for chunk in batches(ordered, 10_000):
            self.store.begin_batch(name, self.run_id, "add", [(i, plan.desired[i].key, None) for i in chunk])
        size = self.destination.batch_size
        outcome = self.destination.replace(
            self.mapping.audience,
            ([plan.desired[i] for i in chunk] for chunk in batches(ordered, size)),
            self.options,
        )
        keys = {i: plan.desired[i].key for i in ordered}
        self._check_answer(outcome, keys)
        accepted = [(i, keys[i]) for i in outcome.accepted]
        rows = self._rejection_rows("add", outcome, keys)
        held_before = set(plan.keys)
        self.store.replace_acknowledged(name, self.run_id, accepted, rows, at=self.clock())
        result.added = len({i for i, _ in accepted} - held_before)
        result.removed = len(held_before - {i for i, _ in accepted})
        result.erased_removed = len(set(plan.erased) - {i for i, _ in accepted})
        result.rejected = len(rows)
        if result.rejected:
            result.status = "partial"

    def _check_answer(self, outcome: BatchResult, sent: Mapping[str, str]) -> None:
        """A destination that reports an identity it was not given has a bug: stop loudly."""
        unknown = [i for i in outcome.accepted if i not in sent] + [
            r.identity for r in outcome.rejected if r.identity not in sent
        ]
        if unknown:
            raise ContractViolation(
                f"destination {self.destination.kind!r} ({self.destination.name}) answered for {len(unknown)} "
                "identities it was not sent; refusing to record its answer"
            )

    def _settle(
        self, result: SyncResult, op: str, outcome: BatchResult, sent: dict[str, str], erased: Mapping[str, int]
    ) -> None:
        self._check_answer(outcome, sent)
        accepted = [(i, sent[i]) for i in dict.fromkeys(outcome.accepted)]
        rows = self._rejection_rows(op, outcome, sent)
        self.store.settle_batch(self.mapping.name, self.run_id, op, accepted, rows, at=self.clock())
        if op == "add":
            result.added += len(accepted)
            result.pending_adds -= len(sent)
        else:
            result.removed += len(accepted)
            result.erased_removed += sum(1 for i, _ in accepted if i in erased)
            result.pending_removes -= len(sent)
        result.rejected += len(rows)
        self.progress(result.counts())

    @staticmethod
    def _rejection_rows(op: str, outcome: BatchResult, keys: Mapping[str, str]) -> list[dict[str, str]]:
        return [
            {
                "identity": r.identity,
                "customer_key": keys.get(r.identity, ""),
                "operation": op,
                "code": r.code,
                "reason": r.reason,
            }
            for r in outcome.rejected
        ]
