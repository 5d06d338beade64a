"""Shipped segment definitions. Each description is the exact rule (the README lists them).

"age" is ``today_utc - event_utc_date`` in whole days (an order placed today has age 0).
"""

from __future__ import annotations

from typing import Any

from worker.segments.conditions import RFM_GROUPS
from worker.segments.config import SegmentDefinition, Windows, parse_definition

#: RFM named groups on the (R, F) score grid, rows R = 5..1, columns F = 1..5 (the common grid;
#: "lost" is the R=1, F=1 corner of hibernating)
RFM_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("new_customers", "potential_loyalists", "potential_loyalists", "champions", "champions"),
    4: ("promising", "potential_loyalists", "potential_loyalists", "loyal_customers", "loyal_customers"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal_customers", "loyal_customers"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
}


def _cells(group: str) -> str:
    cells = [f"R{r}F{f + 1}" for r, row in RFM_GRID.items() for f, name in enumerate(row) if name == group]
    return ", ".join(cells)


def default_definitions(w: Windows) -> dict[str, SegmentDefinition]:
    """The default segments for the given windows (names are fixed; numbers follow the windows)."""
    e, lo, hi = w.engaged_days, w.lapsed_min_days, w.lapsed_max_days
    win = w.whales_window_days
    span = f"in the last {win} days" if win else "over all time"
    within: dict[str, Any] = {"within_days": win} if win else {}
    raw: dict[str, dict[str, Any]] = {
        "engaged_30d": {
            "description": f"Last counted order or last email open/click at age 0..{e - 1} days "
            f"(within the last {e} UTC days).",
            "any": [{"last_order_days": {"max": e - 1}}, {"engaged_days": {"max": e - 1}}],
        },
        "lapsed_60_180": {
            "description": f"Not engaged_30d, and last counted order at age {lo}..{hi} days inclusive.",
            "all": [{"last_order_days": {"min": lo, "max": hi}}, {"not": {"segment": "engaged_30d"}}],
        },
        "lapsed_180_plus": {
            "description": f"Not engaged_30d, and last counted order at age > {hi} days.",
            "all": [{"last_order_days": {"min": hi + 1}}, {"not": {"segment": "engaged_30d"}}],
        },
        "buyers": {
            "description": "At least one counted order (not cancelled, not test; refunded to 0 counts).",
            "order_count": {"min": 1},
        },
        "newsletter_subscribers": {
            "description": "Email consent is SUBSCRIBED.",
            "consent": {"in": ["SUBSCRIBED"]},
        },
        "lifecycle_new": {
            "description": f"First counted order at age 0..{w.new_days - 1} days.",
            "first_order_days": {"max": w.new_days - 1},
        },
        "lifecycle_active": {
            "description": f"Last counted order at age 0..{w.active_days - 1} days, and not lifecycle_new.",
            "all": [{"last_order_days": {"max": w.active_days - 1}}, {"not": {"segment": "lifecycle_new"}}],
        },
        "lifecycle_at_risk": {
            "description": f"Last counted order at age {w.active_days}..{w.dormant_days - 1} days.",
            "last_order_days": {"min": w.active_days, "max": w.dormant_days - 1},
        },
        "lifecycle_dormant": {
            "description": f"Last counted order at age >= {w.dormant_days} days.",
            "last_order_days": {"min": w.dormant_days},
        },
        "lifecycle_repeat": {
            "description": "At least 2 counted orders.",
            "order_count": {"min": 2},
        },
        "lifecycle_loyal": {
            "description": f"At least {w.loyal_min_orders} counted orders and last one at age "
            f"0..{w.loyal_within_days - 1} days.",
            "all": [
                {"order_count": {"min": w.loyal_min_orders}},
                {"last_order_days": {"max": w.loyal_within_days - 1}},
            ],
        },
        "whales": {
            "description": f"Smallest set of customers holding >= {w.whales_share:.0%} of revenue {span} "
            "(largest revenue first, ties by customer key).",
            "revenue_pareto": {"share": w.whales_share, **within},
        },
        "whales_top": {
            "description": f"Top {w.whales_top_percent:g}% of customers with a counted order {span}, by "
            f"revenue {span} (ceil(p * n) customers, revenue > 0, ties by customer key).",
            "revenue_top_percent": {"percent": w.whales_top_percent, **within},
        },
        "winback_due": {
            "description": f"Buyers whose last-order age exceeds {w.winback_k:g} x their mean gap between "
            "orders (single-order customers: the median mean gap of customers with 2+ orders).",
            "winback_due": {"k": w.winback_k},
        },
        "deal_seekers": {
            "description": f"At least {w.deal_share:.0%} of counted orders used a discount.",
            "discount_share": {"min": w.deal_share},
        },
    }
    for group in RFM_GROUPS:
        raw[f"rfm_{group}"] = {
            "description": f"RFM group {group}: (R, F) score cells {_cells(group)}. Scores 1-5 are "
            "quintiles over the n customers with a counted order: score = ceil(5 * rank / n), rank 1..n "
            "ascending, ties broken by customer key; R ranks last order time (most recent = 5), F order "
            "count, M revenue.",
            "rfm": {"group": [group]},
        }
    return {name: parse_definition(name, body) for name, body in raw.items()}
