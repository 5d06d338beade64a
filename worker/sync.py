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
from collections import ChainMap, Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from connectors.kernel.destination import BatchResult, Destination, MappingOptions, Rejection
from connectors.kernel.errors import ConfigError, ConnectorError, ContractViolation, LongPauseError, PermanentError
from connectors.kernel.records import PROFILE_FIELDS, Member, member_from_profile
from worker.config import MappingConfig
from worker.diff import Diff, batches, membership_diff
from worker.store import Store, changes
from worker.store.sync_state import MappingState, cache_for

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
#: how long before a platform would drop a member (``membership_ttl_days``) the engine re-sends it
REFRESH_MARGIN_DAYS = 30
#: an incremental plan still examines every identity this often (the safety net; ``--full`` too)
FULL_CHECK_EVERY = timedelta(hours=24)
#: more candidates than this (or a fifth of the desired) and a plan examines everyone at once
INCREMENTAL_LIMIT = 50_000


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
    #: the diff was written as this many parts, sent by part tasks (the run stays running till then)
    parts: int = 0
    #: the results (instance, version) a split plan was made at: parts trust it while it holds
    planned_at: tuple[str, int] | None = None
    #: "incremental" (the identities that can have changed) or "full" (every identity examined)
    plan: str | None = None
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
            **({"plan": self.plan} if self.plan else {}),
            **({"parts": self.parts, "planned_at": self.planned_at} if self.parts else {}),
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


class Splitter(Protocol):
    """Decides whether a plan is sent as parts, and writes them (worker/split.py)."""

    def wants(self, engine: MappingSync, plan: Plan) -> bool: ...

    def write(self, engine: MappingSync, plan: Plan, result: SyncResult) -> None: ...


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
    #: identity -> customer key for the identities the destination may hold (at least every removal's)
    keys: Mapping[str, str]
    erased: dict[str, int]
    skipped_rejected: int
    #: acknowledged members re-sent because their membership would expire at the platform
    refreshed: int = 0
    #: (database instance, results version) the desired identities were derived at (None: unknown)
    results: tuple[str, int] | None = None
    #: only the identities that can have changed were examined (else every one: a full check)
    incremental: bool = False


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
        split: Splitter | None = None,
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
        #: a large diff is written as parts for several workers instead of sent here (worker/split.py)
        self.split = split

    @property
    def additive(self) -> bool:
        return self.mapping.mode == "additive" or not self.destination.removes_members(self.options)

    def plan(self, *, full: bool = False, full_since: datetime | None = None, only_erasures: bool = False) -> Plan:
        """The diff. Incremental where it can be: only identities whose desired state changed since the
        last plan (results deltas), the last plan's own adds and removes, rejections, intents, erasures
        and identities written outside the engine are examined; every other identity was settled then
        and nothing touched it since. A full check (every identity) when ``full``, in a new process, for
        a results version no change log holds (this process's or the store's), after rows were written
        outside a plan (the mapping's epoch), and every :data:`FULL_CHECK_EVERY`.

        Another process's sync runs need no full check: whatever their plans sent or left unsent was
        desired-not-held or held-not-desired at their time, so it is in this plan's candidates either as
        this process's last adds and removes or through a results delta since; what they left in flight
        or rejected is read from the store at every plan."""
        name = self.mapping.name
        cache = cache_for(self.store)
        with cache.lock:
            epoch = self.store.mapping_epoch(name)  # read first: a write during the plan shows next time
            desired, ineligible, size, state = self._desired()
            flight = self.store.inflight(name)
            erased = {i: m.erasure_id for i, m in self.store.erased_members(name).items()}
            # a full resync forgets old rejections; its continuation skips the ones it met itself
            rejected = set() if full and full_since is None else set(self.store.rejected(name))
            among = None if full or only_erasures else self._candidates(state, desired, flight, erased, rejected)
            if among is None:
                acknowledged = self.store.acknowledged(name)
                wanted: set[str] = set(desired)
            else:
                acknowledged = self.store.acknowledged_among(name, among)
                wanted = {i for i in among if i in desired}
            if only_erasures:
                diff = membership_diff(set(), set(acknowledged), additive=True, in_flight={}, erased=set(erased))
                diff = Diff(adds=[], removes=diff.removes, unchanged=0)
            else:
                diff = membership_diff(
                    wanted,
                    set(acknowledged),
                    additive=self.additive,
                    skip=rejected,
                    in_flight={i: f.op for i, f in flight.items()},
                    erased=set(erased),
                    full=full,
                    resent=self.store.acknowledged_since(name, full_since) if full and full_since else frozenset(),
                )
                if among is not None:  # every desired identity outside the candidates is held
                    diff = Diff(diff.adds, diff.removes, diff.unchanged + len(desired) - len(wanted))
            refresh = self._due_refresh(desired, rejected) if not (full or only_erasures) else set()
            if refresh - set(diff.adds):
                diff = Diff(adds=sorted(set(diff.adds) | refresh), removes=diff.removes, unchanged=diff.unchanged)
            held_keys: Mapping[str, str] = ChainMap({i: f.customer_key for i, f in flight.items()}, acknowledged)
            skipped = len((wanted - set(acknowledged)) & rejected)
            if state is not None:
                self._planned(state, diff, rejected, epoch, full=among is None, only_erasures=only_erasures)
        results = (state.instance, state.version) if state is not None else None
        return Plan(
            desired, ineligible, size, diff, held_keys, erased, skipped, len(refresh), results, among is not None
        )

    def _rule(self) -> tuple[Any, ...]:
        """What the desired identities depend on besides the results: a change rebuilds them."""
        dest = self.destination
        region = getattr(getattr(dest, "runtime", None), "default_phone_region", None)
        return (type(dest).__qualname__, dest.name, repr(dest.config), repr(self.options), self.mapping.segment, region)

    def _classify(self, member: Member) -> tuple[str | None, str | None]:
        reason = self.destination.ineligible_reason(member)
        return (None, reason) if reason is not None else (self.destination.identity(member, self.options), None)

    def _desired(self) -> tuple[dict[str, Member], Counter[str], int, MappingState | None]:
        """Desired identities, from this process's state moved forward by the results deltas, or rebuilt
        (segment read, profiles read once per results version for every mapping)."""
        marker = self.store.results_marker()
        if marker is None:
            keys = self.store.segment_keys(self.mapping.segment)
            desired, ineligible = desired_identities(self.destination, self.store.members(keys).values(), self.options)
            return desired, ineligible, len(keys), None
        instance, version = marker
        cache = cache_for(self.store)
        if cache.profiles is not None and cache.profiles[:2] != marker:
            cache.profiles = None
        state = cache.mappings.get(self.mapping.name)
        if state is not None and (state.rule != self._rule() or state.instance != instance):
            state = None
        if state is not None and state.version != version:
            deltas = changes.between(self.store, instance, state.version, version)
            if deltas is None or any(self.mapping.segment in d.stale for d in deltas):
                state = self._rebuild(state, marker)
            else:
                self._advance(state, deltas)
        elif state is None:
            state = self._rebuild(None, marker)
        cache.mappings[self.mapping.name] = state
        return state.desired, Counter(state.ineligible), len(state.segment), state

    def _rebuild(self, previous: MappingState | None, marker: tuple[str, int]) -> MappingState:
        cache = cache_for(self.store)
        if cache.profiles is None:
            cache.profiles = (*marker, self.store.all_members())
        profiles = cache.profiles[2]
        keys = self.store.segment_keys(self.mapping.segment)
        state = MappingState(self._rule(), marker[0], marker[1], keys, {}, {}, {}, Counter())
        for key in sorted(keys):
            member = profiles.get(key)
            if member is None:
                continue
            known = previous.lookup(key) if previous is not None else None
            if known is not None and known[0] and known[1] == member:
                state.put(key, member, known[0], None)
            else:
                identity, reason = self._classify(member)
                state.put(key, member, identity, reason)
        state.dirty.clear()
        if previous is not None:
            state.epoch = previous.epoch
        return state

    def _advance(self, state: MappingState, deltas: list[changes.Delta]) -> None:
        """Replay the results deltas on the segment's members; identities whose desired state changed
        become dirty. The desired dict is copied first: a plan handed out earlier keeps its own."""
        state.desired = dict(state.desired)
        segment = self.mapping.segment
        for delta in deltas:
            joined, left = delta.joined.get(segment, ()), delta.left.get(segment, ())
            touched = set(joined) | set(left) | {k for k in delta.profiles if k in state.segment}
            state.segment.difference_update(left)
            state.segment.update(joined)
            missing = [k for k in touched if k in state.segment and k not in delta.profiles]
            fetched = self.store.members(missing) if missing else {}
            for key in sorted(touched):
                member: Member | None = None
                if key in state.segment:
                    values = delta.profiles.get(key) if key in delta.profiles else None
                    if values is not None:
                        member = member_from_profile(key, dict(zip(PROFILE_FIELDS, values, strict=True)))
                    elif key not in delta.profiles:
                        member = fetched.get(key)
                old = state.lookup(key)
                if member is None:
                    if old is not None:
                        state.drop(key)
                    continue
                if old is not None and old[0] and old[1] == member:
                    continue
                identity, reason = self._classify(member)
                if old is not None and not old[0] and reason == old[1]:
                    continue
                if old is not None:
                    state.drop(key)
                state.put(key, member, identity, reason)
            state.version = delta.version

    def _candidates(
        self,
        state: MappingState | None,
        desired: Mapping[str, Member],
        flight: Mapping[str, Any],
        erased: Mapping[str, int],
        rejected: set[str],
    ) -> set[str] | None:
        """The identities an incremental plan examines, or None when every one must be."""
        if state is None or state.full:
            return None
        if state.checked_at is None or self.clock() - state.checked_at >= FULL_CHECK_EVERY:
            return None
        if self.store.mapping_epoch(self.mapping.name) != state.epoch:
            return None  # rows were written outside a plan (reconcile, a replace): not accounted for
        among = state.dirty | state.pending | state.touched | state.rejected | rejected | set(flight) | set(erased)
        if len(among) > max(INCREMENTAL_LIMIT, len(desired) // 5):
            return None
        return among

    def _planned(
        self, state: MappingState, diff: Diff, rejected: set[str], epoch: int, *, full: bool, only_erasures: bool
    ) -> None:
        """What the next plan must re-examine: this plan's adds and removes (sent or not) and rejections."""
        sent = set(diff.adds) | set(diff.removes)
        if only_erasures:
            state.pending |= sent
        else:
            state.pending, state.rejected, state.dirty, state.touched = sent, set(rejected), set(), set()
            if full:
                state.full, state.checked_at = False, self.clock()
        state.epoch = epoch

    def _due_refresh(self, desired: Mapping[str, Member], rejected: set[str]) -> set[str]:
        """Members whose membership would expire at the platform soon (Customer Match: 540 days)
        are re-sent, :data:`REFRESH_MARGIN_DAYS` before they would lapse."""
        ttl = self.destination.membership_ttl_days
        if not ttl:
            return set()
        cutoff = self.clock() - timedelta(days=max(1, ttl - REFRESH_MARGIN_DAYS))
        return {i for i in self.store.acknowledged_before(self.mapping.name, cutoff) if i in desired} - rejected

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
        result.plan = "incremental" if plan.incremental else "full"
        # a native replace needs someone to replace with: an empty segment is a plain removal of all
        if full and self.destination.supports_replace and plan.desired and not (only_erasures or self.additive):
            self._replace(result, plan)
            return
        result.pending_adds, result.pending_removes = len(plan.diff.adds), len(plan.diff.removes)
        self.progress(result.counts())
        if self.split is not None and self.split.wants(self, plan):
            self.split.write(self, plan, result)
            return
        size = self.destination.batch_size
        for batch in batches(plan.diff.adds, size):
            if self._out_of_time(result):
                return
            self.send_adds(result, {i: plan.desired[i] for i in batch}, plan.erased)
        for batch in batches(plan.diff.removes, size):
            if self._out_of_time(result):
                return
            self.send_removes(result, {i: plan.keys.get(i, "") for i in batch}, plan.erased)
        if result.rejected:
            result.status = "partial"

    def send_adds(self, result: SyncResult, members: Mapping[str, Member], erased: Mapping[str, int]) -> None:
        """One batch of adds: written ahead as in flight, sent, settled by the answer."""
        sent = {i: m.key for i, m in members.items()}
        self.store.begin_batch(self.mapping.name, self.run_id, "add", [(i, k, None) for i, k in sent.items()])
        try:
            outcome = self.destination.add(self.mapping.audience, list(members.values()), self.options)
        except PermanentError as exc:
            outcome = self._refused_whole(exc, "add", list(sent))
        self._settle(result, "add", outcome, sent, erased)

    def send_removes(self, result: SyncResult, keys: Mapping[str, str], erased: Mapping[str, int]) -> None:
        """One batch of removes (identity -> customer key), written ahead and settled as adds are."""
        sent = dict(keys)
        batch = list(sent)
        self.store.begin_batch(
            self.mapping.name, self.run_id, "remove", [(i, k, erased.get(i)) for i, k in sent.items()]
        )
        try:
            outcome = self.destination.remove(self.mapping.audience, batch, self.options)
        except PermanentError as exc:
            outcome = self._refused_whole(exc, "remove", batch)
        self._settle(result, "remove", outcome, sent, erased)

    def _refused_whole(self, exc: PermanentError, op: str, batch: list[str]) -> BatchResult:
        """A batch the destination refuses as a whole: every member recorded with why, the run goes on.
        A person must act on a config error (credentials, permissions): that stops the run instead."""
        if isinstance(exc, ConfigError):
            raise exc
        log.warning("mapping %s: %s of %d members refused: %s", self.mapping.name, op, len(batch), exc.message)
        return BatchResult(rejected=[Rejection(i, exc.message, exc.code or "refused") for i in batch])

    def classify(self, member: Member) -> tuple[str | None, str | None]:
        """(identity, None) for an eligible member, (None, why not) otherwise."""
        return self._classify(member)

    def out_of_time(self, result: SyncResult) -> bool:
        return self._out_of_time(result)

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
