"""Connectors register themselves by name; nothing central switches on a vendor."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_SOURCES: dict[str, type[Any]] = {}
_DESTINATIONS: dict[str, type[Any]] = {}
#: engagement readers (opens/clicks), keyed by the destination type they read from
_ENGAGEMENT: dict[str, type[Any]] = {}

#: modules imported on first lookup so their classes register (entry points would do for plugins)
_BUILTIN_MODULES = (
    "connectors.sources.shopify",
    "connectors.destinations.file",
    "connectors.destinations.mailchimp",
    "connectors.destinations.meta",
    "connectors.sources.mailchimp_activity",
)


def register_source(name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        _SOURCES[name] = cls
        return cls

    return deco


def register_destination(name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        _DESTINATIONS[name] = cls
        return cls

    return deco


def register_engagement(name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        _ENGAGEMENT[name] = cls
        return cls

    return deco


def engagement_class(name: str) -> type[Any] | None:
    _load_builtins()
    return _ENGAGEMENT.get(name)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def source_class(name: str) -> type[Any]:
    _load_builtins()
    try:
        return _SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown source type {name!r}; known: {', '.join(sorted(_SOURCES))}") from None


def destination_class(name: str) -> type[Any]:
    _load_builtins()
    try:
        return _DESTINATIONS[name]
    except KeyError:
        known = ", ".join(sorted(_DESTINATIONS))
        raise KeyError(f"unknown destination type {name!r}; known: {known}") from None


def destination_types() -> list[str]:
    _load_builtins()
    return sorted(_DESTINATIONS)
