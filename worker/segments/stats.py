"""Per-segment statistics computed with the masks, once per recompute: size, revenue share, overlaps.

Overlaps come from one matrix product of the membership masks (|A ∩ B| for every pair at once), so
even at a million customers and thirty segments they cost a fraction of a second; the pages and the
preview read these stored results instead of recomputing anything on request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from worker.segments.table import CustomerTable

Mask = npt.NDArray[np.bool_]
#: overlaps below this Jaccard index are not kept
MIN_OVERLAP = 0.01


@dataclass(frozen=True)
class SegmentStats:
    size: int
    revenue_share: float
    overlaps: dict[str, float] = field(default_factory=dict)


def segment_stats(table: CustomerTable, masks: Mapping[str, Mask]) -> dict[str, SegmentStats]:
    names = list(masks)
    if not names:
        return {}
    matrix = np.vstack([masks[n] for n in names]).astype(np.float32)
    both = matrix @ matrix.T  # exact in float32 below 2**24 members per segment pair
    sizes = np.diag(both).astype(np.int64)
    revenue = table.revenue_micros.astype(np.float64)
    total = float(revenue.sum())
    held = matrix.astype(np.float64) @ revenue if total > 0 else np.zeros(len(names))
    out: dict[str, SegmentStats] = {}
    for i, name in enumerate(names):
        overlaps: dict[str, float] = {}
        for j, other in enumerate(names):
            if i == j:
                continue
            union = sizes[i] + sizes[j] - both[i, j]
            jaccard = float(both[i, j] / union) if union else 0.0
            if jaccard >= MIN_OVERLAP:
                overlaps[other] = round(jaccard, 4)
        out[name] = SegmentStats(int(sizes[i]), float(held[i] / total) if total > 0 else 0.0, overlaps)
    return out
