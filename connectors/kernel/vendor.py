"""The vendor registry: a vendor is one folder whose ``__init__`` declares a :class:`Vendor`.

Nothing central lists vendors. Every sub-package of ``connectors`` with a ``VENDOR`` is found on first
lookup, and so is every ``audience_sync.vendors`` entry point (a plugin installed as a package). A
declaration names its parts by import path, so finding the vendors imports no HTTP client, emulator
or spec: those load when a run uses them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENTRY_POINTS = "audience_sync.vendors"


def load(path: str) -> Any:
    """``"package.module:attribute"`` → the attribute."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Vendor:
    """What a vendor folder offers, each part as ``module:attribute`` (all optional but the name)."""

    name: str
    #: the destination class (``type = "<name>"`` in ``[destinations.X]``)
    destination: str | None = None
    #: the source class (``type = "<name>"`` in ``[source]``)
    source: str | None = None
    #: the engagement reader (opens and clicks), built over this vendor's destination
    engagement: str | None = None
    #: config field → environment variable of each secret (never in the config file)
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: a callable returning ``(emulator, secret)`` for the built-in sandbox
    sandbox: str | None = None
    #: the API descriptions (in ``connectors/<name>/spec/``) its emulator and contract checks use
    specs: tuple[str, ...] = ()
    #: the contract-suite hooks (a :mod:`connectors.kernel.contract` class)
    contract: str | None = None
    #: one line for the README table and ``--help``
    summary: str = ""

    def part(self, attribute: str) -> Any:
        path = getattr(self, attribute)
        if path is None:
            raise KeyError(f"vendor {self.name!r} has no {attribute}")
        return load(path)


_VENDORS: dict[str, Vendor] = {}
_LOCK = threading.Lock()


def _discover() -> None:
    import connectors

    found: dict[str, Vendor] = {}
    for info in pkgutil.iter_modules(connectors.__path__):
        if not info.ispkg or info.name == "kernel":
            continue
        declared = getattr(importlib.import_module(f"connectors.{info.name}"), "VENDOR", None)
        if isinstance(declared, Vendor):
            found[declared.name] = declared
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        declared = entry.load()
        if isinstance(declared, Vendor):
            found.setdefault(declared.name, declared)
    _VENDORS.update(found)


def vendors() -> dict[str, Vendor]:
    with _LOCK:
        if not _VENDORS:
            _discover()
        return dict(_VENDORS)


def vendor(name: str) -> Vendor:
    try:
        return vendors()[name]
    except KeyError:
        raise KeyError(f"unknown vendor {name!r}; known: {', '.join(sorted(vendors()))}") from None


def _class_of(kind: str, name: str) -> type[Any]:
    offering = {n: v for n, v in vendors().items() if getattr(v, kind) is not None}
    if name not in offering:
        raise KeyError(f"unknown {kind} type {name!r}; known: {', '.join(sorted(offering))}")
    cls: type[Any] = offering[name].part(kind)
    return cls


def destination_class(name: str) -> type[Any]:
    return _class_of("destination", name)


def source_class(name: str) -> type[Any]:
    return _class_of("source", name)


def engagement_class(name: str) -> type[Any] | None:
    declared = vendors().get(name)
    if declared is None or declared.engagement is None:
        return None
    cls: type[Any] = declared.part("engagement")
    return cls


def destination_types() -> list[str]:
    return sorted(n for n, v in vendors().items() if v.destination is not None)


def secret_variables() -> dict[str, str]:
    """Every environment variable a vendor reads a secret from (for deployment checks)."""
    return {env: name for name, v in vendors().items() for env in v.secrets.values()}
