"""The membership diff, a pure function (set algebra in the worker, never on the broker's Redis)."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass


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
) -> Diff:
    """``adds = desired − acknowledged − skip``; ``removes = acknowledged − desired − skip``.

    ``skip`` holds identities the destination rejected before (not re-sent until a full resync);
    an additive mapping never removes.

    Sorted so batches are deterministic: a replayed run sends the same batches.
    """
    adds = sorted(desired - acknowledged - skip)
    removes = [] if additive else sorted(acknowledged - desired - skip)
    return Diff(adds=adds, removes=removes, unchanged=len(desired & acknowledged))


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
