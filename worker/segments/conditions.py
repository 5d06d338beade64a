"""Segment rules as data: the condition tree and its strict parser.

A condition is a table with exactly one key (its kind). Combine with ``all``, ``any`` and ``not``.
Day ranges are inclusive bounds on ``age_days = today_utc - event_utc_date`` in whole days, so
"within the last 30 days" is ``{max = 29}``; an event dated after ``now``'s day has a negative age
and so satisfies any ``max``. A missing value (no order, never engaged) satisfies no range.

Kinds: ``segment = "name"``; ``last_order_days`` / ``first_order_days`` / ``engaged_days`` (email
open/click) ``{min, max}``; ``order_count``, ``revenue``, ``discount_share`` ``{min, max}``;
``revenue_top_percent = P`` or ``{percent, within_days}``; ``revenue_pareto = share`` or ``{share,
within_days}``; ``rfm = {group = [...], r/f/m = {min, max}}``; ``bought = {product_ids, skus,
within_days}``; ``first_channel = {in = [...], contains = [...]}`` (case-insensitive);
``consent = {in = [...]}``; ``winback_due = k`` or ``{k}``. ``within_days`` counts events at age
0..within_days-1 and defaults to all time. Nothing here is evaluated as code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from connectors.kernel.records import Consent

RFM_GROUPS = (
    "champions",
    "loyal_customers",
    "potential_loyalists",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose_them",
    "hibernating",
    "lost",
)
SEGMENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class DefinitionError(ValueError):
    """A segment definition that cannot be used; the message says where, what and what is allowed."""


@dataclass(frozen=True)
class Range:
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


@dataclass(frozen=True)
class SegmentRef:
    name: str


@dataclass(frozen=True)
class DaysSince:
    """Age in whole UTC days of the last/first counted order or the last email engagement."""

    event: Literal["last_order", "first_order", "engaged"]
    range: Range


@dataclass(frozen=True)
class Measure:
    field: Literal["order_count", "revenue", "discount_share"]
    range: Range


@dataclass(frozen=True)
class RevenueTop:
    percent: float
    within_days: int  # 0 = all time


@dataclass(frozen=True)
class RevenuePareto:
    share: float
    within_days: int


@dataclass(frozen=True)
class Rfm:
    groups: tuple[str, ...] = ()
    r: Range | None = None
    f: Range | None = None
    m: Range | None = None


@dataclass(frozen=True)
class Bought:
    product_ids: tuple[str, ...] = ()
    skus: tuple[str, ...] = ()
    within_days: int = 0  # 0 = any time


@dataclass(frozen=True)
class FirstChannel:
    any_of: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsentIn:
    values: tuple[str, ...]


@dataclass(frozen=True)
class WinbackDue:
    k: float


Condition: TypeAlias = (
    AllOf
    | AnyOf
    | Not
    | SegmentRef
    | DaysSince
    | Measure
    | RevenueTop
    | RevenuePareto
    | Rfm
    | Bought
    | FirstChannel
    | ConsentIn
    | WinbackDue
)

_EVENTS: dict[str, Literal["last_order", "first_order", "engaged"]] = {
    "last_order_days": "last_order",
    "first_order_days": "first_order",
    "engaged_days": "engaged",
}
KINDS = (
    "all",
    "any",
    "not",
    "segment",
    "last_order_days",
    "first_order_days",
    "engaged_days",
    "order_count",
    "revenue",
    "discount_share",
    "revenue_top_percent",
    "revenue_pareto",
    "rfm",
    "bought",
    "first_channel",
    "consent",
    "winback_due",
)


def _fail(where: str, message: str, allowed: str) -> DefinitionError:
    return DefinitionError(f"{where}: {message}; allowed: {allowed}")


def _number(value: object, where: str, allowed: str, *, integer: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (integer and not float(value).is_integer()):  # type: ignore[arg-type]
        raise _fail(where, f"expected {'an integer' if integer else 'a number'}", allowed)
    return float(value)  # type: ignore[arg-type]


def _table(value: object, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    allowed = ", ".join(keys)
    if not isinstance(value, dict):
        raise _fail(where, "expected a table", f"a table with keys {allowed}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise _fail(f"{where}.{unknown[0]}", f"unknown key {unknown[0]!r}", allowed)
    return value


def _strings(value: object, where: str, allowed: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(where, "expected a non-empty list of strings", allowed)
    return tuple(value)


def _range(value: object, where: str, *, integer: bool, lo: float = 0.0, hi: float = math.inf) -> Range:
    kind = "integers" if integer else "numbers"
    allowed = f"a table {{min, max}} of {kind} >= {lo:g}" + (f" and <= {hi:g}" if hi < math.inf else "")
    table = _table(value, where, ("min", "max"))
    if not table:
        raise _fail(where, "needs min or max", allowed)
    bounds: dict[str, float] = {}
    for key, raw in table.items():
        number = _number(raw, f"{where}.{key}", allowed, integer=integer)
        if not lo <= number <= hi:
            raise _fail(f"{where}.{key}", f"{number:g} is out of range", allowed)
        bounds[key] = number
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        raise _fail(where, f"min ({bounds['min']:g}) is greater than max ({bounds['max']:g})", allowed)
    return Range(bounds.get("min"), bounds.get("max"))


def _within(table: dict[str, Any], where: str) -> int:
    if "within_days" not in table:
        return 0
    value = _number(table["within_days"], f"{where}.within_days", "an integer >= 1", integer=True)
    if value < 1:
        raise _fail(f"{where}.within_days", "must be at least 1", "an integer >= 1 (omit for all time)")
    return int(value)


def parse_condition(raw: object, where: str) -> Condition:
    """Parse one condition table; ``where`` is the path used in error messages."""
    kinds = ", ".join(KINDS)
    if not isinstance(raw, dict) or len(raw) != 1:
        found = f" (found keys: {', '.join(map(str, raw))})" if isinstance(raw, dict) and raw else ""
        raise _fail(where, f"a condition is a table with exactly one key{found}", kinds)
    ((kind, value),) = raw.items()
    at = f"{where}.{kind}"
    if kind in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise _fail(at, "expected a non-empty list of conditions", "[{condition}, ...]")
        items = tuple(parse_condition(item, f"{at}[{i}]") for i, item in enumerate(value))
        return AllOf(items) if kind == "all" else AnyOf(items)
    if kind == "not":
        return Not(parse_condition(value, at))
    if kind == "segment":
        if not isinstance(value, str) or not SEGMENT_NAME.match(value):
            raise _fail(at, "expected a segment name", "the name of another segment")
        return SegmentRef(value)
    if kind in ("last_order_days", "first_order_days", "engaged_days"):
        return DaysSince(_EVENTS[kind], _range(value, at, integer=True))
    if kind == "order_count":
        return Measure("order_count", _range(value, at, integer=True))
    if kind == "revenue":
        return Measure("revenue", _range(value, at, integer=False))
    if kind == "discount_share":
        return Measure("discount_share", _range(value, at, integer=False, hi=1.0))
    if kind == "revenue_top_percent":
        table = value if isinstance(value, dict) else {"percent": value}
        table = _table(table, at, ("percent", "within_days"))
        allowed = "a number 0 < percent <= 100, or {percent, within_days}"
        percent = _number(table.get("percent"), f"{at}.percent", allowed)
        if not 0 < percent <= 100:
            raise _fail(f"{at}.percent", f"{percent:g} is out of range", allowed)
        return RevenueTop(percent, _within(table, at))
    if kind == "revenue_pareto":
        table = value if isinstance(value, dict) else {"share": value}
        table = _table(table, at, ("share", "within_days"))
        allowed = "a number 0 < share <= 1, or {share, within_days}"
        share = _number(table.get("share"), f"{at}.share", allowed)
        if not 0 < share <= 1:
            raise _fail(f"{at}.share", f"{share:g} is out of range", allowed)
        return RevenuePareto(share, _within(table, at))
    if kind == "rfm":
        table = _table(value, at, ("group", "r", "f", "m"))
        if not table:
            raise _fail(at, "needs group or r/f/m score ranges", "group, r, f, m")
        groups: tuple[str, ...] = ()
        if "group" in table:
            groups = _strings(table["group"], f"{at}.group", ", ".join(RFM_GROUPS))
            bad = [g for g in groups if g not in RFM_GROUPS]
            if bad:
                raise _fail(f"{at}.group", f"unknown RFM group {bad[0]!r}", ", ".join(RFM_GROUPS))
        scores = {k: _range(table[k], f"{at}.{k}", integer=True, lo=1, hi=5) for k in ("r", "f", "m") if k in table}
        return Rfm(groups, scores.get("r"), scores.get("f"), scores.get("m"))
    if kind == "bought":
        table = _table(value, at, ("product_ids", "skus", "within_days"))
        allowed = "product_ids and/or skus: lists of strings; within_days: integer >= 1"
        if "product_ids" not in table and "skus" not in table:
            raise _fail(at, "needs product_ids or skus", allowed)
        ids = _strings(table["product_ids"], f"{at}.product_ids", allowed) if "product_ids" in table else ()
        skus = _strings(table["skus"], f"{at}.skus", allowed) if "skus" in table else ()
        return Bought(ids, skus, _within(table, at))
    if kind == "first_channel":
        table = _table(value, at, ("in", "contains"))
        allowed = "in: list of channels (exact, case-insensitive); contains: substring(s), case-insensitive"
        if not table:
            raise _fail(at, "needs in or contains", allowed)
        any_of = _strings(table["in"], f"{at}.in", allowed) if "in" in table else ()
        contains = _strings(table["contains"], f"{at}.contains", allowed) if "contains" in table else ()
        return FirstChannel(tuple(c.lower() for c in any_of), tuple(c.lower() for c in contains))
    if kind == "consent":
        allowed = ", ".join(c.value for c in Consent)
        table = value if isinstance(value, dict) else {"in": value}
        table = _table(table, at, ("in",))
        values = _strings(table.get("in"), f"{at}.in", allowed)
        bad = [v for v in values if v not in {c.value for c in Consent}]
        if bad:
            raise _fail(f"{at}.in", f"unknown consent state {bad[0]!r}", allowed)
        return ConsentIn(values)
    if kind == "winback_due":
        table = value if isinstance(value, dict) else {"k": value}
        table = _table(table, at, ("k",))
        k = _number(table.get("k", 1.5), f"{at}.k", "a number > 0")
        if k <= 0:
            raise _fail(f"{at}.k", f"{k:g} is out of range", "a number > 0")
        return WinbackDue(k)
    raise _fail(where, f"unknown condition {kind!r}", kinds)


def references(condition: Condition) -> set[str]:
    """Names of the segments a condition refers to."""
    match condition:
        case SegmentRef(name=name):
            return {name}
        case AllOf(items=items) | AnyOf(items=items):
            return set().union(*(references(c) for c in items))
        case Not(item=item):
            return references(item)
    return set()
