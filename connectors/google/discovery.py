"""Request/response checks against the official ``datamanager:v1`` discovery document.

The discovery format is not JSON Schema: a ``$ref`` is a bare schema name, 64-bit integers are
strings (``format: int64``), ``type: any`` means anything. :func:`to_json_schema` translates one
document into a single JSON Schema with every discovery schema under ``$defs``; objects are closed
(``additionalProperties: false``) because Google's JSON front end refuses unknown field names.

Methods (HTTP verb, path, request and response schema) come from the same document, so the emulator
serves the paths the document names and nothing else. A missing document raises ``SpecMissing``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

from connectors.kernel.specs import load_spec

VENDOR = "google"
DOCUMENT = "datamanager.v1.json.gz"
SCOPE = "https://www.googleapis.com/auth/datamanager"

_PRIMITIVES = {"string", "integer", "number", "boolean"}
_INT64 = {"int64", "uint64"}


def document() -> dict[str, Any]:
    spec: dict[str, Any] = load_spec(VENDOR, DOCUMENT)
    return spec


def _property(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"$ref": f"#/$defs/{schema['$ref']}"}
    kind = schema.get("type")
    if kind == "any" or kind is None:
        return {}
    if kind == "array":
        return {"type": "array", "items": _property(schema.get("items", {}))}
    if kind == "object":
        out: dict[str, Any] = {"type": "object"}
        if "properties" in schema:
            out["properties"] = {k: _property(v) for k, v in schema["properties"].items()}
            out["additionalProperties"] = False
        if "additionalProperties" in schema:
            out["additionalProperties"] = _property(schema["additionalProperties"])
        return out
    if kind == "string" and schema.get("format") in _INT64:
        # proto3 JSON writes 64-bit integers as strings and reads either form
        return {"anyOf": [{"type": "string", "pattern": r"^-?\d+$"}, {"type": "integer"}]}
    if kind in _PRIMITIVES:
        out = {"type": kind}
        if "enum" in schema:
            out["enum"] = list(schema["enum"])
        return out
    raise ValueError(f"discovery type {kind!r} has no JSON Schema mapping")


@cache
def to_json_schema() -> dict[str, Any]:
    """The whole document's schemas as one JSON Schema (draft 2020-12) ``$defs`` table."""
    defs = {
        name: _property({**body, "type": body.get("type", "object")}) for name, body in document()["schemas"].items()
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs}


@dataclass(frozen=True)
class Violation:
    """One way a body breaks a discovery schema. ``path`` is the JSON path (camelCase keys, list indices)."""

    path: tuple[str | int, ...]
    kind: str  # "unknown_field" | "enum" | "type" | "other"
    message: str
    name: str = ""  # the offending key for ``unknown_field``, else empty

    @property
    def field(self) -> str:
        """The path as Google names fields: proto (snake_case) names, ``[i]`` for list items."""
        return field_path(self.path)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def field_path(path: tuple[str | int, ...] | list[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + snake(part)
    return out


def _inline(node: Any, defs: dict[str, Any], stack: tuple[str, ...]) -> Any:
    """Replace ``$ref`` by the schema it names (validation is ~2.5x faster); a cycle keeps its ``$ref``."""
    if isinstance(node, list):
        return [_inline(v, defs, stack) for v in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        return node if name in stack else _inline(defs[name], defs, (*stack, name))
    return {k: _inline(v, defs, stack) for k, v in node.items()}


_VALIDATORS: dict[str, Any] = {}
_LOCK = threading.Lock()


def validator(schema_name: str) -> Any:
    """A ``jsonschema`` validator for one named discovery schema (``KeyError`` if the document lacks it)."""
    with _LOCK:
        if schema_name not in _VALIDATORS:
            from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

            root = to_json_schema()
            if schema_name not in root["$defs"]:
                raise KeyError(f"{DOCUMENT} has no schema {schema_name!r}")
            inlined = _inline(root["$defs"][schema_name], root["$defs"], (schema_name,))
            _VALIDATORS[schema_name] = Draft202012Validator({**root, **inlined})
        return _VALIDATORS[schema_name]


_UNEXPECTED = re.compile(r"'([^']+)' (?:was|were) unexpected")


def errors(schema_name: str, body: Any) -> list[Violation]:
    """Every violation of ``schema_name`` by ``body`` (empty when the body is valid)."""
    found: list[Violation] = []
    for error in validator(schema_name).iter_errors(body):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            match = _UNEXPECTED.search(error.message)
            names = [n.strip(" '") for n in match.group(1).split(",")] if match else [""]
            found += [Violation(path, "unknown_field", error.message, n) for n in names]
        elif error.validator == "enum":
            found.append(Violation(path, "enum", error.message))
        elif error.validator in ("type", "anyOf", "pattern"):
            found.append(Violation(path, "type", error.message))
        else:
            found.append(Violation(path, "other", error.message))
    return sorted(found, key=lambda v: (field_path(v.path), v.name))


@dataclass(frozen=True)
class Method:
    id: str
    http_method: str
    path: str  # with the leading slash, e.g. "/v1/audienceMembers:ingest"
    request: str | None
    response: str | None


def _methods(resources: dict[str, Any]) -> dict[str, Method]:
    found: dict[str, Method] = {}
    for resource in resources.values():
        for body in resource.get("methods", {}).values():
            found[body["id"]] = Method(
                id=body["id"],
                http_method=body["httpMethod"],
                path="/" + body.get("flatPath", body["path"]),
                request=body.get("request", {}).get("$ref"),
                response=body.get("response", {}).get("$ref"),
            )
        found.update(_methods(resource.get("resources", {})))
    return found


def method(method_id: str) -> Method:
    """A method by its discovery id, e.g. ``datamanager.audienceMembers.ingest``."""
    return _methods(document()["resources"])[method_id]
