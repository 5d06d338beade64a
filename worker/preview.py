"""Segment preview: what the (possibly edited) config would produce from the store's data, right now.

Per segment: size, change since the last recompute run (size delta against that run's row; joined and
left against the membership it stored), revenue share, masked member samples and the mappings that
sync it. Across segments: the Jaccard overlap matrix. Warnings: empty segments, near-duplicates
(Jaccard > 0.9), and segments too small for ad platforms. :func:`build_preview` is pure;
:func:`preview_store` reads the store; :meth:`Preview.to_dict` is the JSON form for the control API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.kernel.records import Member, member_from_profile
from connectors.kernel.redact import mask_email
from worker.config import AppConfig
from worker.factory import build_destination, make_runtime
from worker.segments import CustomerTable, SegmentDefinition, compute_segments, table_from_facts
from worker.segments import segment_revenue_share as revenue_share
from worker.settings import Settings
from worker.store import Store
from worker.sync import desired_identities

#: above this Jaccard overlap two segments are reported as near-duplicates
NEAR_DUPLICATE = 0.9
#: the CLI lists pairs at or above this overlap (the JSON form always has the whole matrix)
OVERLAP_SHOWN = 0.5
SAMPLE_SIZE = 3


@dataclass(frozen=True)
class Platform:
    """An ad platform and the matched members it needs before an audience can be targeted."""

    name: str
    min_matched: int


META, GOOGLE, TIKTOK = Platform("Meta", 100), Platform("Google", 100), Platform("TikTok", 1000)
#: an ads destination that names no platform (a hashed-email file, say) may feed any of these
AD_PLATFORMS = (META, GOOGLE, TIKTOK)


@dataclass(frozen=True)
class Target:
    """A mapping that syncs the segment, and how many of its members that destination accepts."""

    mapping: str
    destination: str
    audience_kind: str
    eligible: int
    #: platforms whose minimum applies (ad audiences only)
    platforms: tuple[Platform, ...] = ()


@dataclass(frozen=True)
class Baseline:
    """The last successful recompute run: its sizes, and the membership it stored (None: unknown)."""

    run_id: int
    finished_at: datetime | None
    sizes: Mapping[str, int]
    members: Mapping[str, frozenset[str]] | None = None


@dataclass(frozen=True)
class SegmentPreview:
    name: str
    description: str
    size: int
    #: size in the last recompute run (None: no run yet, or the segment is new)
    previous_size: int | None
    joined: int | None
    left: int | None
    revenue_share: float
    #: share of the revenue of the last ``Preview.recent_days`` days (None when that is 0)
    recent_revenue_share: float | None
    sample: tuple[str, ...]
    targets: tuple[Target, ...] = ()

    @property
    def change(self) -> int | None:
        return None if self.previous_size is None else self.size - self.previous_size


@dataclass(frozen=True)
class Finding:
    """A warning for the marketer; ``segments`` names what it is about."""

    kind: Literal["empty", "near_duplicate", "too_small"]
    segments: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Preview:
    as_of: datetime
    customers: int
    segments: tuple[SegmentPreview, ...]
    #: Jaccard overlap, rows and columns in ``segments`` order
    jaccard: npt.NDArray[np.float64]
    warnings: tuple[Finding, ...]
    baseline: Baseline | None = None
    recent_days: int = 0
    #: segments of the last run that the config no longer defines (their stored members go next run)
    dropped: tuple[str, ...] = ()
    config: str = ""

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def pairs(self, threshold: float = OVERLAP_SHOWN) -> list[tuple[str, str, float]]:
        """Distinct segment pairs with overlap >= ``threshold``, largest first."""
        names = self.names
        found = [
            (names[i], names[j], float(self.jaccard[i, j]))
            for i in range(len(names))
            for j in range(i + 1, len(names))
            if self.jaccard[i, j] >= threshold
        ]
        return sorted(found, key=lambda p: (-p[2], p[0], p[1]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the whole matrix, all warnings, masked samples only)."""
        baseline = None
        if self.baseline is not None:
            finished = self.baseline.finished_at
            baseline = {"run_id": self.baseline.run_id, "finished_at": finished.isoformat() if finished else None}
        return {
            "as_of": self.as_of.isoformat(),
            "config": self.config,
            "customers": self.customers,
            "last_recompute": baseline,
            "recent_days": self.recent_days,
            "segments": [
                {
                    "name": s.name,
                    "description": s.description,
                    "size": s.size,
                    "previous_size": s.previous_size,
                    "change": s.change,
                    "joined": s.joined,
                    "left": s.left,
                    "revenue_share": round(s.revenue_share, 6),
                    "recent_revenue_share": None
                    if s.recent_revenue_share is None
                    else round(s.recent_revenue_share, 6),
                    "sample": list(s.sample),
                    "mappings": [
                        {
                            "mapping": t.mapping,
                            "destination": t.destination,
                            "audience_kind": t.audience_kind,
                            "eligible": t.eligible,
                            "platforms": [p.name for p in t.platforms],
                        }
                        for t in s.targets
                    ],
                }
                for s in self.segments
            ],
            "overlap": {"segments": self.names, "jaccard": [[round(float(v), 6) for v in row] for row in self.jaccard]},
            "warnings": [{"kind": w.kind, "segments": list(w.segments), "message": w.message} for w in self.warnings],
            "dropped_segments": list(self.dropped),
        }


# -- pure parts ------------------------------------------------------------------------------------


def jaccard_matrix(index: pd.Index, members: Sequence[pd.Index]) -> npt.NDArray[np.float64]:
    """|A ∩ B| / |A ∪ B| for every pair (1 on the diagonal, 0 where both are empty)."""
    masks = [index.isin(m) for m in members]
    sizes = [int(m.sum()) for m in masks]
    k = len(masks)
    out = np.eye(k, dtype=np.float64)
    for i in range(k):
        if sizes[i] == 0:
            out[i, i] = 0.0
        for j in range(i + 1, k):
            both = int(np.count_nonzero(masks[i] & masks[j]))
            union = sizes[i] + sizes[j] - both
            out[i, j] = out[j, i] = both / union if union else 0.0
    return out


def _platform_list(platforms: Iterable[Platform]) -> str:
    by_minimum: dict[int, list[str]] = {}
    for p in platforms:
        by_minimum.setdefault(p.min_matched, []).append(p.name)
    return ", ".join(
        f"{' and '.join(names)} {'need' if len(names) > 1 else 'needs'} ≥ {n:,}"
        for n, names in sorted(by_minimum.items())
    )


def findings(segments: Sequence[SegmentPreview], jaccard: npt.NDArray[np.float64]) -> list[Finding]:
    """Empty segments, near-duplicate pairs, and segments too small to target on ad platforms."""
    out: list[Finding] = []
    for s in segments:
        if s.size == 0:
            mapped = ", ".join(t.mapping for t in s.targets)
            tail = f"; mapped to {mapped}, whose audience the next sync would empty" if mapped else ""
            out.append(Finding("empty", (s.name,), f"{s.name} has no members{tail}"))
    names = [s.name for s in segments]
    for i in range(len(segments)):
        for j in range(i + 1, len(segments)):
            if jaccard[i, j] > NEAR_DUPLICATE:
                out.append(
                    Finding(
                        "near_duplicate",
                        (names[i], names[j]),
                        f"{names[i]} and {names[j]} overlap {jaccard[i, j]:.0%} (Jaccard): near-duplicates; "
                        "merge them or make them disjoint",
                    )
                )
    smallest = min(p.min_matched for p in AD_PLATFORMS)
    for s in segments:
        if s.size == 0:
            continue  # reported as empty
        ads = [t for t in s.targets if t.platforms]
        for t in ads:
            short = [p for p in t.platforms if t.eligible < p.min_matched]
            if short:
                where = t.platforms[0].name if len(t.platforms) == 1 else "ad audience"
                out.append(
                    Finding(
                        "too_small",
                        (s.name,),
                        f"{s.name} → {t.mapping} ({where}): {t.eligible:,} eligible members; "
                        f"{_platform_list(short)} matched members to target (matches are fewer than uploads)",
                    )
                )
        if not s.targets and s.size < smallest:  # unmapped: would it do for any ad platform?
            out.append(
                Finding(
                    "too_small",
                    (s.name,),
                    f"{s.name} has {s.size:,} members: too small for any ad platform "
                    f"({_platform_list(AD_PLATFORMS)} matched members)",
                )
            )
    return out


def _sample(table: CustomerTable, members: pd.Index, size: int = SAMPLE_SIZE) -> tuple[str, ...]:
    """Up to ``size`` distinct masked emails of members (first by customer key)."""
    masked: dict[str, None] = {}
    for email in table.frame["email"].reindex(members[: size * 10]).dropna():
        masked.setdefault(mask_email(str(email)))
        if len(masked) == size:
            break
    return tuple(masked)


def build_preview(
    table: CustomerTable,
    members: Mapping[str, pd.Index],
    definitions: Mapping[str, SegmentDefinition],
    now: datetime,
    *,
    baseline: Baseline | None = None,
    targets: Mapping[str, Sequence[Target]] | None = None,
    recent_days: int = 0,
    config: str = "",
) -> Preview:
    """Assemble the preview from computed membership; no I/O."""
    names = list(members)
    segments: list[SegmentPreview] = []
    for name in names:
        keys = members[name]
        previous = baseline.sizes.get(name) if baseline is not None else None
        joined = left = None
        if baseline is not None and baseline.members is not None and name in baseline.sizes:
            before = baseline.members.get(name, frozenset())
            now_keys = set(keys)
            joined, left = len(now_keys - before), len(before - now_keys)
        segments.append(
            SegmentPreview(
                name=name,
                description=definitions[name].description if name in definitions else "",
                size=len(keys),
                previous_size=previous,
                joined=joined,
                left=left,
                revenue_share=revenue_share(table, keys),
                recent_revenue_share=revenue_share(table, keys, now, recent_days) if recent_days else None,
                sample=_sample(table, keys),
                targets=tuple((targets or {}).get(name, ())),
            )
        )
    jaccard = jaccard_matrix(table.index, [members[n] for n in names])
    dropped = tuple(sorted(set(baseline.sizes) - set(names))) if baseline is not None else ()
    return Preview(
        as_of=now,
        customers=len(table),
        segments=tuple(segments),
        jaccard=jaccard,
        warnings=tuple(findings(segments, jaccard)),
        baseline=baseline,
        recent_days=recent_days,
        dropped=dropped,
        config=config,
    )


# -- from the store and the config ------------------------------------------------------------------


def _member_objects(table: CustomerTable, keys: pd.Index) -> list[Member]:
    """The segment's members as the sync will see them: the same profile rows, the same conversion."""
    from worker.cycle import profile_rows

    return [member_from_profile(row["customer_key"], row) for row in profile_rows(table.frame.loc[keys])]


def mapping_targets(
    config: AppConfig, settings: Settings, table: CustomerTable, members: Mapping[str, pd.Index]
) -> dict[str, list[Target]]:
    """Per segment, its mappings with the members each destination would accept (no network I/O)."""
    runtime = make_runtime(settings)
    out: dict[str, list[Target]] = {}
    for name, mapping in config.mappings.items():
        if mapping.segment not in members:
            continue
        dest_config = config.destinations[mapping.destination]
        destination = build_destination(mapping.destination, dest_config, settings, runtime)
        try:
            people = _member_objects(table, members[mapping.segment])
            eligible = len(desired_identities(destination, people, config.options[name])[0])
            kind = destination.audience_kind
            minimum = destination.targeting_minimum
        finally:
            destination.close()
        platforms: tuple[Platform, ...] = ()
        if kind == "ads":
            platforms = (Platform(*minimum),) if minimum else AD_PLATFORMS
        out.setdefault(mapping.segment, []).append(Target(name, mapping.destination, kind, eligible, platforms))
    return out


def last_recompute(store: Store, *, with_members: bool = True, scan: int = 500) -> Baseline | None:
    """The latest successful recompute run among the last ``scan`` runs, with its stored membership."""
    for run in store.recent_runs(limit=scan):
        if run.kind == "recompute" and run.status == "ok" and isinstance(run.counts.get("segments"), dict):
            sizes = {str(k): int(v) for k, v in run.counts["segments"].items()}
            stored = {name: frozenset(store.segment_keys(name)) for name in sizes} if with_members else None
            return Baseline(run.id, run.finished_at, sizes, stored)
    return None


def preview_store(store: Store, config: AppConfig, settings: Settings, now: datetime) -> Preview:
    """Segments of ``config`` computed fresh from the store's data at ``now``, against the last run.

    Through the process's snapshot, as a recompute does (its cache file, then only rows changed since):
    the same fast path, never a read of the whole orders table into pandas."""
    from worker.store.snapshot import snapshot_for

    table = table_from_facts(snapshot_for(store).refresh(), reuse=True)
    members = compute_segments(table, now, config.segments)
    return build_preview(
        table,
        members,
        config.segments.resolved(),
        now,
        baseline=last_recompute(store),
        targets=mapping_targets(config, settings, table, members),
        recent_days=config.segments.windows.whales_window_days,
        config=str(settings.config or "built-in sandbox config"),
    )


def preview_from_settings(settings: Settings, now: datetime | None = None) -> Preview:
    """Load the config named by ``settings`` (raises ``ConfigFileError``) and preview it on the store."""
    from worker.cycle import utc_now
    from worker.runner import load_app_config
    from worker.store import open_store

    config = load_app_config(settings)
    store = open_store(settings.database_url)
    try:
        return preview_store(store, config, settings, now or utc_now())
    finally:
        store.dispose()


def preview_dict(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """The preview as JSON-able data (for the control API)."""
    return preview_from_settings(settings, now).to_dict()


# -- text for the CLI -------------------------------------------------------------------------------


def _signed(value: int | None, baseline: bool) -> str:
    if value is None:
        return "new" if baseline else "-"
    return f"{value:+,}"


def _opt(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _audience(target: Target) -> str:
    if target.audience_kind == "email":
        return "email list"
    if len(target.platforms) == 1:
        return f"{target.platforms[0].name} ads"
    return "ad audience" if target.platforms else target.audience_kind


def render_preview(preview: Preview, *, matrix: bool = False) -> str:
    """Human-readable preview: one line per segment, overlapping pairs (or the matrix), warnings."""
    lines = [f"preview as of {preview.as_of.isoformat(timespec='seconds')}: {preview.customers:,} customers"]
    lines.append(f"config: {preview.config}")
    base = preview.baseline
    if base is None:
        lines.append("change: no recompute run in the store yet")
    else:
        when = base.finished_at.isoformat(timespec="seconds") if base.finished_at else "unfinished"
        lines.append(f"change: against recompute run #{base.run_id} (finished {when})")
    lines.append("")
    recent = f"rev {preview.recent_days}d" if preview.recent_days else ""
    header = ("segment", "size", "change", "joined", "left", "revenue", recent, "sample")
    rows: list[tuple[str, ...]] = [header]
    for s in preview.segments:
        share = "" if s.recent_revenue_share is None else f"{s.recent_revenue_share:.1%}"
        rows.append(
            (
                s.name,
                f"{s.size:,}",
                _signed(s.change, base is not None),
                _opt(s.joined),
                _opt(s.left),
                f"{s.revenue_share:.1%}",
                share,
                ", ".join(s.sample[:2]),
            )
        )
    lines += _table(rows, right={1, 2, 3, 4, 5, 6})
    if preview.dropped:
        lines.append(f"no longer defined (members dropped at the next run): {', '.join(preview.dropped)}")

    mapped = [(s, t) for s in preview.segments for t in s.targets]
    if mapped:
        lines += ["", "mappings (eligible: members the destination accepts):"]
        rows = [
            ("", t.mapping, s.name, f"{t.eligible:,} of {s.size:,} eligible", _audience(t), t.destination)
            for s, t in mapped
        ]
        lines += _table(rows, right={3})

    lines.append("")
    if matrix:
        lines.append("overlap matrix (Jaccard, %; columns numbered as rows):")
        names = preview.names
        width = max(len(n) for n in names) if names else 0
        numbers = "".join(f"{i + 1:>4}" for i in range(len(names)))
        lines.append(f"{'':>{width + 4}}{numbers}")
        for i, name in enumerate(names):
            cells = "".join(f"{round(100 * preview.jaccard[i, j]):>4}" for j in range(len(names)))
            lines.append(f"{i + 1:>2}. {name:<{width}}{cells}")
    else:
        pairs = preview.pairs()
        lines.append(f"overlap (Jaccard ≥ {OVERLAP_SHOWN:.2f}; --matrix for all pairs): {len(pairs)} pairs")
        lines += [f"  {j:.2f}  {a} ~ {b}" for a, b, j in pairs]

    lines.append("")
    if preview.warnings:
        lines.append(f"warnings ({len(preview.warnings)}):")
        lines += [f"  {w.kind.replace('_', '-')}: {w.message}" for w in preview.warnings]
    else:
        lines.append("warnings: none")
    return "\n".join(lines)
