"""The membership diff, a pure function (set algebra in the worker, never on the broker's Redis)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Diff:
    adds: list[str]
    removes: list[str]
    unchanged: int


def membership_diff(
    desired: Set[str],
    acknowledged: Set[str],
    *,
    additive: bool = False,
    skip: Set[str] = frozenset(),
    in_flight: Mapping[str, str] | None = None,
    erased: Set[str] = frozenset(),
    full: bool = False,
    resent: Set[str] = frozenset(),
) -> Diff:
    """What to send so the destination ends holding exactly ``desired``.

    ``in_flight`` maps identities of batches sent but never settled (the worker died) to their
    operation: an add may have been applied, so the member *may* be held and is removed if not
    desired; a remove may have been applied, so the member is only *possibly* held and is added again
    if desired. A removal of something absent is harmless at every destination we push to.

    ``skip`` holds identities the destination rejected before (not re-sent until a full resync).
    An additive mapping never removes, except ``erased`` people, who are removed from everywhere.
    ``full`` re-sends every desired member (it repairs drift at destinations without native replace),
    except those in ``resent``: acknowledged since the full resync began (its checkpoint).

    Sorted so batches are deterministic: a replayed run sends the same batches.
    """
    flight = in_flight or {}
    maybe_added = {i for i, op in flight.items() if op == "add"}
    maybe_removed = {i for i, op in flight.items() if op == "remove"}
    may_hold = set(acknowledged) | maybe_added
    surely_held = set(acknowledged) - maybe_removed
    adds = sorted(desired - skip - resent) if full else sorted(desired - surely_held - skip)
    owed_removal = set(erased) & may_hold
    removes = owed_removal if additive else (may_hold - desired - skip) | owed_removal
    return Diff(adds=adds, removes=sorted(removes), unchanged=len(desired & surely_held))


def batches(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
