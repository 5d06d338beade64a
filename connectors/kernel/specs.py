"""Official API descriptions that emulators and contract checks validate against.

Each vendor folder carries its own copy (``connectors/<vendor>/spec/``, with a README saying where it
came from), so a clone with nothing beside it still validates. A missing file is an error, never a
reason to skip validation: an emulator that accepts anything would hide the very misunderstandings
the contract checks exist to catch.
"""

from __future__ import annotations

import gzip
import json
import threading
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # connectors/: the vendor folders


class SpecMissing(RuntimeError):
    """An API description the contract checks need is not in this checkout."""


def spec_path(vendor: str, name: str) -> Path:
    path = ROOT / vendor / "spec" / name
    if not path.is_file():
        raise SpecMissing(
            f"API description {path.relative_to(ROOT.parent)} is missing: the {vendor} emulator and contract "
            f"checks cannot validate without it (see connectors/{vendor}/spec/README.md for where it comes from)"
        )
    return path


def spec_bytes(vendor: str, name: str) -> bytes:
    """The file's original bytes (decompressed when stored as ``.gz``)."""
    raw = spec_path(vendor, name).read_bytes()
    return gzip.decompress(raw) if name.endswith(".gz") else raw


@cache
def load_spec(vendor: str, name: str) -> Any:
    """The parsed document (JSON, or YAML for ``.yaml``/``.yml``), parsed once per process."""
    data = spec_bytes(vendor, name)
    stem = name.removesuffix(".gz")
    if stem.endswith((".yaml", ".yml")):
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    return json.loads(data)


class OpenApiSchemas:
    """Validators for ``#/components/schemas/<name>`` of one OpenAPI 3.0 document."""

    def __init__(self, vendor: str, name: str) -> None:
        self.vendor, self.name = vendor, name
        self.uri = f"urn:audience-sync:spec:{vendor}:{name}"
        self._validators: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._registry: Any = None

    def validator(self, schema: str) -> Any:
        with self._lock:
            if self._registry is None:
                from referencing import Registry, Resource
                from referencing.jsonschema import DRAFT4

                resource = Resource.from_contents(load_spec(self.vendor, self.name), default_specification=DRAFT4)
                self._registry = Registry().with_resource(self.uri, resource)
            if schema not in self._validators:
                from openapi_schema_validator import OAS30Validator

                document = load_spec(self.vendor, self.name)
                if schema not in document.get("components", {}).get("schemas", {}):
                    raise KeyError(f"{self.vendor}/{self.name} has no schema {schema!r}")
                ref = {"$ref": f"{self.uri}#/components/schemas/{schema}"}
                self._validators[schema] = OAS30Validator(ref, registry=self._registry)
            return self._validators[schema]

    def errors(self, schema: str, body: Any) -> list[str]:
        """Every violation of ``schema`` by ``body``, as ``path: message`` lines (empty when valid)."""
        return [
            f"{'/'.join(map(str, e.path)) or '(body)'}: {e.message}" for e in self.validator(schema).iter_errors(body)
        ]
