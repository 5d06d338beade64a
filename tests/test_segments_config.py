"""Definition validation: every error names the segment, the offending key and what is allowed."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from worker.segments import SegmentsConfig
from worker.segments.conditions import AllOf, DaysSince, Not, Range, SegmentRef


def error_of(definitions: dict[str, Any], **extra: Any) -> str:
    with pytest.raises(pydantic.ValidationError) as info:
        SegmentsConfig.model_validate({"definitions": definitions, **extra})
    return str(info.value)


def test_the_issue_example_parses() -> None:
    config = SegmentsConfig.model_validate(
        {
            "definitions": {
                "lapsed": {
                    "description": "Lapsed, not engaged",
                    "all": [
                        {"last_order_days": {"min": 60, "max": 180}},
                        {"not": {"segment": "engaged_30d"}},
                    ],
                }
            }
        }
    )
    rule = config.resolved()["lapsed"].rule
    assert rule == AllOf((DaysSince("last_order", Range(60, 180)), Not(SegmentRef("engaged_30d"))))
    assert config.resolved()["lapsed"].description == "Lapsed, not engaged"
    assert "engaged_30d" in config.resolved()


@pytest.mark.parametrize(
    ("definitions", "expected"),
    [
        # unknown condition kind
        ({"s1": {"last_order_age": {"max": 3}}}, ["'s1'", "last_order_age", "allowed:", "last_order_days"]),
        # unknown field inside a condition
        ({"s2": {"last_order_days": {"maxx": 3}}}, ["'s2'", "maxx", "allowed: min, max"]),
        # min greater than max
        (
            {"s3": {"order_count": {"min": 5, "max": 2}}},
            ["'s3'", "order_count", "greater than max", "allowed:"],
        ),
        # wrong type
        ({"s4": {"order_count": {"min": "two"}}}, ["'s4'", "order_count.min", "integer", "allowed:"]),
        # out of range
        ({"s5": {"discount_share": {"min": 1.5}}}, ["'s5'", "discount_share.min", "allowed:", "<= 1"]),
        # two conditions in one table
        ({"s6": {"order_count": {"min": 1}, "revenue": {"min": 1}}}, ["'s6'", "exactly one key", "allowed:"]),
        # bad enumerations
        ({"s7": {"consent": {"in": ["YES"]}}}, ["'s7'", "consent.in", "'YES'", "allowed:", "SUBSCRIBED"]),
        ({"s8": {"rfm": {"group": ["whales"]}}}, ["'s8'", "rfm.group", "'whales'", "allowed:", "champions"]),
        ({"s9": {"rfm": {"r": {"max": 6}}}}, ["'s9'", "rfm.r.max", "allowed:", "<= 5"]),
        ({"s10": {"bought": {"within_days": 3}}}, ["'s10'", "bought", "product_ids or skus", "allowed:"]),
        ({"s11": {"revenue_pareto": 1.2}}, ["'s11'", "revenue_pareto.share", "allowed:"]),
        ({"s12": {"any": []}}, ["'s12'", "any", "non-empty list", "allowed:"]),
        (
            {"s13": {"all": [{"segment": "nope"}]}},
            ["'s13'", "undefined segment 'nope'", "allowed:", "buyers"],
        ),
        ({"s14": {"description": 3, "order_count": {"min": 1}}}, ["'s14'", "description", "allowed:"]),
        ({"bad name!": {"order_count": {"min": 1}}}, ["'bad name!'", "name", "allowed:"]),
        ({"s15": {"first_channel": {"like": "x"}}}, ["'s15'", "first_channel.like", "allowed: in, contains"]),
        ({"s16": {"winback_due": {"k": 0}}}, ["'s16'", "winback_due.k", "allowed:"]),
    ],
)
def test_definition_errors(definitions: dict[str, Any], expected: list[str]) -> None:
    message = error_of(definitions)
    for part in expected:
        assert part in message, (part, message)


def test_cycles_are_rejected_with_the_path() -> None:
    message = error_of(
        {
            "a": {"segment": "b"},
            "b": {"all": [{"segment": "buyers"}, {"not": {"segment": "c"}}]},
            "c": {"any": [{"segment": "a"}]},
        }
    )
    assert "cycle a -> b -> c -> a" in message and "'a'" in message and "allowed:" in message
    assert "cycle s -> s" in error_of({"s": {"not": {"segment": "s"}}})


def test_references_are_checked_against_the_resolved_set() -> None:
    # referring to a default is fine; without defaults it is undefined
    SegmentsConfig.model_validate({"definitions": {"x": {"segment": "buyers"}}})
    message = error_of({"x": {"segment": "buyers"}}, use_defaults=False)
    assert "undefined segment 'buyers'" in message


def test_unknown_top_level_and_window_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match="colour"):
        SegmentsConfig.model_validate({"colour": "blue"})
    with pytest.raises(pydantic.ValidationError, match="engaged_dayz"):
        SegmentsConfig.model_validate({"windows": {"engaged_dayz": 3}})
    with pytest.raises(pydantic.ValidationError, match="lapsed_min_days"):
        SegmentsConfig.model_validate({"windows": {"lapsed_min_days": 200}})


def test_windows_drive_the_defaults() -> None:
    config = SegmentsConfig.model_validate({"windows": {"engaged_days": 45, "lapsed_min_days": 90}})
    engaged = config.resolved()["engaged_30d"]
    assert "0..44" in engaged.description
    assert "90..180" in config.resolved()["lapsed_60_180"].description


def test_toml_round_trip() -> None:
    import tomllib

    text = """
    [segments.windows]
    winback_k = 2.0

    [segments.definitions.bought_bridge_product]
    description = "Bought the bridge product in the last 90 days"
    bought = { product_ids = ["8123"], within_days = 90 }

    [segments.definitions.lapsed_paid_search]
    all = [{ segment = "lapsed_60_180" }, { first_channel = { contains = ["google / cpc"] } }]
    """
    data = tomllib.loads(text)
    config = SegmentsConfig.model_validate(data.get("segments", {}))
    assert config.windows.winback_k == 2.0
    assert {"bought_bridge_product", "lapsed_paid_search", "buyers"} <= set(config.resolved())
