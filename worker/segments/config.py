"""The ``[segments]`` table of the TOML config: windows and segment definitions, validated at load.

Example::

    [segments.windows]
    engaged_days = 30

    [segments.definitions.bought_bridge_product]
    description = "Bought the bridge product in the last 90 days"
    bought = { product_ids = ["8123", "8124"], within_days = 90 }

    [segments.definitions.lapsed_paid_search]
    all = [{ segment = "lapsed_60_180" }, { first_channel = { contains = ["google / cpc"] } }]

User definitions are added to the shipped defaults and override a default of the same name
(``use_defaults = false`` drops the defaults).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.segments.conditions import SEGMENT_NAME, Condition, DefinitionError, parse_condition, references


class SegmentDefinition(BaseModel):
    """One named segment: a description for people and a rule for the engine."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    description: str = ""
    rule: Condition


def parse_definition(name: str, raw: object) -> SegmentDefinition:
    """Build a definition from its TOML table: ``description`` plus exactly one condition key."""
    if isinstance(raw, SegmentDefinition):
        return raw
    if not isinstance(raw, dict):
        raise DefinitionError(f"segment {name!r}: expected a table; allowed: description plus one condition")
    body = dict(raw)
    description = body.pop("description", "")
    if not isinstance(description, str):
        raise DefinitionError(f"segment {name!r}: description: expected a string; allowed: text")
    try:
        rule = parse_condition(body, "rule")
    except DefinitionError as exc:
        raise DefinitionError(f"segment {name!r}: {exc}") from None
    return SegmentDefinition(description=description, rule=rule)


class Windows(BaseModel):
    """Tunable numbers of the shipped definitions (days are whole UTC days)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engaged_days: int = Field(30, ge=1)
    lapsed_min_days: int = Field(60, ge=1)
    lapsed_max_days: int = Field(180, ge=1)
    new_days: int = Field(30, ge=1)
    active_days: int = Field(90, ge=1)
    dormant_days: int = Field(365, ge=1)
    loyal_min_orders: int = Field(3, ge=2)
    loyal_within_days: int = Field(180, ge=1)
    whales_share: float = Field(0.8, gt=0, le=1)
    whales_top_percent: float = Field(20.0, gt=0, le=100)
    #: window of the whales' revenue, in days; 0 = all time
    whales_window_days: int = Field(365, ge=0)
    winback_k: float = Field(1.5, gt=0)
    deal_share: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Windows:
        if self.lapsed_min_days > self.lapsed_max_days:
            raise ValueError("windows: lapsed_min_days must not exceed lapsed_max_days")
        if self.engaged_days > self.lapsed_min_days:
            raise ValueError("windows: engaged_days must not exceed lapsed_min_days")
        if self.active_days >= self.dormant_days:
            raise ValueError("windows: active_days must be less than dormant_days")
        return self


class SegmentsConfig(BaseModel):
    """Validated ``[segments]`` table; :meth:`resolved` gives the definitions the engine runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: Windows = Windows()
    use_defaults: bool = True
    definitions: dict[str, SegmentDefinition] = {}

    @field_validator("definitions", mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise ValueError("definitions: expected a table of named segments")
        parsed = {}
        for name, body in raw.items():
            if not isinstance(name, str) or not SEGMENT_NAME.match(name):
                raise ValueError(f"segment {name!r}: invalid name; allowed: letters, digits, _ . - (max 100)")
            parsed[name] = parse_definition(name, body)
        return parsed

    @model_validator(mode="after")
    def _check_graph(self) -> SegmentsConfig:
        check_graph(self.resolved())
        return self

    def resolved(self) -> dict[str, SegmentDefinition]:
        """Defaults (unless disabled) overridden and extended by the user's definitions."""
        from worker.segments.defaults import default_definitions

        base = default_definitions(self.windows) if self.use_defaults else {}
        return {**base, **self.definitions}


def check_graph(definitions: dict[str, SegmentDefinition]) -> list[str]:
    """Reject references to undefined segments and cycles; return names in dependency order."""
    for name, definition in definitions.items():
        for ref in sorted(references(definition.rule)):
            if ref not in definitions:
                raise DefinitionError(
                    f"segment {name!r}: segment: references undefined segment {ref!r}; "
                    f"allowed: {', '.join(sorted(definitions))}"
                )
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise DefinitionError(
                f"segment {cycle[0]!r}: segment: reference cycle {' -> '.join(cycle)}; "
                "allowed: references to segments that do not refer back"
            )
        state[name] = 1
        for ref in sorted(references(definitions[name].rule)):
            visit(ref, [*path, name])
        state[name] = 2
        order.append(name)

    for name in sorted(definitions):
        visit(name, [])
    return order
