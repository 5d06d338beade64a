"""Charts drawn on the server as SVG: size over time, adds and removes per run.

Server-side SVG, not a chart library: nothing to serve or fetch, it renders without JavaScript,
prints, and a test can read its numbers; these two small charts need no more.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def line(points: Sequence[tuple[str | None, int]], *, title: str, width: int = 320, height: int = 80) -> Markup:
    """A line of sizes over time (oldest first), with the last value labelled."""
    if not points:
        return Markup(f'<p class="muted">{escape(title)}: no history yet</p>')
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span = high - low or 1
    step = width / max(1, len(points) - 1)
    coords = " ".join(
        f"{i * step:.1f},{height - 6 - (v - low) / span * (height - 12):.1f}" for i, v in enumerate(values)
    )
    label = f"{title}: from {values[0]:,} to {values[-1]:,} over {len(values)} recomputes"
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}"><title>{escape(label)}</title>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{coords}"/>'
        f'<text x="{width - 4}" y="12" text-anchor="end">{values[-1]:,}</text></svg>'
    )


def bars(runs: Sequence[tuple[str, int, int]], *, title: str, width: int = 480, height: int = 100) -> Markup:
    """Adds (up) and removes (down) per run, oldest first."""
    if not runs:
        return Markup(f'<p class="muted">{escape(title)}: no runs yet</p>')
    peak = max(max(a, r) for _, a, r in runs) or 1
    middle = height / 2
    slot = width / len(runs)
    bars_svg = []
    for i, (label, added, removed) in enumerate(runs):
        x = i * slot + slot * 0.15
        w = slot * 0.7
        up = added / peak * (middle - 4)
        down = removed / peak * (middle - 4)
        tip = escape(f"{label}: +{added:,} / -{removed:,}")
        bars_svg.append(
            f"<g><title>{tip}</title>"
            f'<rect class="add" x="{x:.1f}" y="{middle - up:.1f}" width="{w:.1f}" height="{up:.1f}"/>'
            f'<rect class="remove" x="{x:.1f}" y="{middle:.1f}" width="{w:.1f}" height="{down:.1f}"/></g>'
        )
    label = f"{title}: {len(runs)} runs, up to {peak:,} members in one"
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}"><title>{escape(label)}</title>'
        f'<line x1="0" x2="{width}" y1="{middle}" y2="{middle}" stroke="currentColor" stroke-width="0.5"/>'
        + "".join(bars_svg)
        + "</svg>"
    )
