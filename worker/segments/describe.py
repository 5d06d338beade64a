"""A segment's rule in words, from its definition, for the marketer's pages."""

from __future__ import annotations

from worker.segments.conditions import (
    AllOf,
    AnyOf,
    Bought,
    Condition,
    ConsentIn,
    DaysSince,
    FirstChannel,
    Measure,
    Not,
    Range,
    RevenuePareto,
    RevenueTop,
    Rfm,
    SegmentRef,
    WinbackDue,
)

EVENTS = {"last_order": "last order", "first_order": "first order", "engaged": "last open, click or order"}
FIELDS = {"order_count": "orders", "revenue": "revenue", "discount_share": "share of orders with a discount code"}


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{int(value):,}"


def _range(r: Range, unit: str = "") -> str:
    tail = f" {unit}" if unit else ""
    if r.min is not None and r.max is not None:
        return f"{_number(r.min)} to {_number(r.max)}{tail}" if r.min != r.max else f"exactly {_number(r.min)}{tail}"
    if r.min is not None:
        return f"at least {_number(r.min)}{tail}"
    if r.max is not None:
        return f"at most {_number(r.max)}{tail}"
    return "any"


def _window(days: int) -> str:
    return f"in the last {days:,} days" if days else "of all time"


def describe(condition: Condition) -> str:
    """One sentence: ``all of: last order 60 to 180 days ago; not in engaged_30d``."""
    match condition:
        case AllOf(items):
            return "all of: " + "; ".join(describe(c) for c in items)
        case AnyOf(items):
            return "any of: " + "; ".join(describe(c) for c in items)
        case Not(item):
            return f"not ({describe(item)})"
        case SegmentRef(name):
            return f"in {name}"
        case DaysSince(event, r):
            return f"{EVENTS.get(event, event)} {_range(r, 'days ago')}"
        case Measure(field, r):
            return f"{FIELDS.get(field, field)} {_range(r)}"
        case RevenueTop(percent, within):
            return f"in the top {_number(percent)}% of customers by revenue {_window(within)}"
        case RevenuePareto(share, within):
            return f"among the fewest customers holding {_number(share * 100)}% of revenue {_window(within)}"
        case Rfm(groups, r, f, m):
            parts = [f"RFM group {', '.join(groups)}"] if groups else []
            parts += [f"{axis} score {_range(v)}" for axis, v in (("R", r), ("F", f), ("M", m)) if v is not None]
            return "; ".join(parts) or "any RFM score"
        case Bought(product_ids, skus, within):
            what = ", ".join([*product_ids, *skus]) or "anything"
            return f"bought {what} {_window(within)}"
        case FirstChannel(any_of, contains):
            parts = ([f"is {' or '.join(any_of)}"] if any_of else []) + (
                [f"contains {' or '.join(contains)}"] if contains else []
            )
            return "first order's channel " + " or ".join(parts)
        case ConsentIn(values):
            return f"email consent is {' or '.join(values)}"
        case WinbackDue(k):
            return f"days since the last order exceed {_number(k)} × their own mean gap between orders"
    return str(condition)
