"""The sync config file (TOML): source, segments, destinations and segment → destination mappings.

Loaded and validated at start-up; a bad file stops the program with a message naming the file,
the key and what was expected (:class:`ConfigFileError`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.kernel.destination import DestinationConfig, MappingOptions
from connectors.kernel.source import SourceConfig
from connectors.kernel.vendor import destination_class, engagement_class, source_class, vendors
from worker.segments import SegmentsConfig

DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "sandbox.toml"


class ConfigFileError(Exception):
    """The config file is unusable; the message says where and why."""


class MappingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    segment: str
    destination: str
    #: the destination's audience id (Mailchimp list id, Meta audience id, file name)
    audience: str
    #: mirror: adds and removes; additive: never remove (for audiences that refuse removals)
    mode: Literal["mirror", "additive"] = "mirror"
    options: dict[str, Any] = Field(default_factory=dict)


class EngagementConfig(BaseModel):
    """Read opens/clicks from a destination that reports them (e.g. a Mailchimp account)."""

    model_config = ConfigDict(extra="forbid")
    destination: str


class RawConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: dict[str, Any]
    segments: dict[str, Any] = Field(default_factory=dict)
    destinations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    mappings: list[MappingConfig] = Field(default_factory=list)
    engagement: list[EngagementConfig] = Field(default_factory=list)


class AppConfig(BaseModel):
    """The validated config: typed source/destination tables and per-mapping options."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    path: Path
    source: SourceConfig
    segments: SegmentsConfig
    destinations: dict[str, DestinationConfig]
    mappings: dict[str, MappingConfig]
    options: dict[str, MappingOptions]
    #: destination names whose engagement (opens, clicks) is ingested
    engagement: list[str] = Field(default_factory=list)

    def mapping(self, name: str) -> MappingConfig:
        try:
            return self.mappings[name]
        except KeyError:
            known = ", ".join(sorted(self.mappings)) or "none"
            raise ConfigFileError(f"{self.path}: no mapping named {name!r} (mappings: {known})") from None


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(
            f"{loc}: {err['msg']}"
            + (f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict | list) else "")
        )
    return "; ".join(parts)


def _no_secrets(path: Path, where: str, table: dict[str, Any]) -> None:
    """A secret in the config file would end up in backups, diffs and tickets: refuse it, and say where
    it goes instead."""
    if "secret" not in table:
        return
    declared = vendors().get(str(table.get("type", "")))
    variables = ", ".join(declared.secrets.values()) if declared and declared.secrets else "its environment variable"
    raise ConfigFileError(f"{path}: {where}.secret: secrets never go in the config file; set {variables} instead")


def load_config(path: Path | None) -> AppConfig:
    """Read and validate ``path`` (the built-in sandbox config when ``None``)."""
    path = path or DEFAULT_CONFIG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path) -> AppConfig:
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(f"{path}: {_describe(exc, '')}") from None

    _no_secrets(path, "source", raw.source)
    for name, table in raw.destinations.items():
        _no_secrets(path, f"destinations.{name}", table)
    try:
        source_type = str(raw.source.get("type", ""))
        source_cls = source_class(source_type)
        source = source_cls.Config.model_validate(raw.source)
    except KeyError as exc:
        raise ConfigFileError(f"{path}: source.type: {exc.args[0]}") from None
    except ValidationError as exc:
        raise ConfigFileError(f"{path}: {_describe(exc, 'source')}") from None

    try:
        segments = SegmentsConfig.model_validate(raw.segments)
    except (ValidationError, ValueError) as exc:
        detail = _describe(exc, "segments") if isinstance(exc, ValidationError) else str(exc)
        raise ConfigFileError(f"{path}: {detail}") from None

    destinations: dict[str, DestinationConfig] = {}
    for name, table in raw.destinations.items():
        try:
            cls = destination_class(str(table.get("type", "")))
            destinations[name] = cls.Config.model_validate(table)
        except KeyError as exc:
            raise ConfigFileError(f"{path}: destinations.{name}.type: {exc.args[0]}") from None
        except ValidationError as exc:
            raise ConfigFileError(f"{path}: {_describe(exc, f'destinations.{name}')}") from None

    mappings: dict[str, MappingConfig] = {}
    options: dict[str, MappingOptions] = {}
    known_segments = set(segments.resolved())
    for index, mapping in enumerate(raw.mappings):
        where = f"mappings[{index}] ({mapping.name})"
        if mapping.name in mappings:
            raise ConfigFileError(f"{path}: {where}.name: duplicate mapping name")
        if mapping.destination not in destinations:
            known = ", ".join(sorted(destinations)) or "none defined"
            raise ConfigFileError(
                f"{path}: {where}.destination: no destination {mapping.destination!r} (expected one of: {known})"
            )
        if mapping.segment not in known_segments:
            raise ConfigFileError(
                f"{path}: {where}.segment: unknown segment {mapping.segment!r} "
                f"(expected one of: {', '.join(sorted(known_segments))})"
            )
        cls = destination_class(destinations[mapping.destination].type)
        try:
            options[mapping.name] = cls.Options.model_validate(mapping.options)
        except ValidationError as exc:
            raise ConfigFileError(f"{path}: {_describe(exc, f'{where}.options')}") from None
        mappings[mapping.name] = mapping
    engagement: list[str] = []
    for index, item in enumerate(raw.engagement):
        where = f"engagement[{index}].destination"
        if item.destination not in destinations:
            known = ", ".join(sorted(destinations)) or "none defined"
            raise ConfigFileError(f"{path}: {where}: no destination {item.destination!r} (expected one of: {known})")
        if engagement_class(destinations[item.destination].type) is None:
            raise ConfigFileError(
                f"{path}: {where}: destination type {destinations[item.destination].type!r} reports no engagement"
            )
        engagement.append(item.destination)
    return AppConfig(
        path=path,
        source=source,
        segments=segments,
        destinations=destinations,
        mappings=mappings,
        options=options,
        engagement=engagement,
    )
