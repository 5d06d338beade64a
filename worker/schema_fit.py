"""Bring a validated row into what its table can hold, before the database sees it.

The limits come from the SQLAlchemy schema itself (``String(n)`` columns), so they cannot drift from
it. PostgreSQL refuses a NUL byte in text, a string that is not valid UTF-8 (a lone surrogate) and a
value over a column's length; SQLite refuses none of them, which is how such records used to stop a
PostgreSQL pull for good. Key columns that do not fit reject the record (a truncated id could name
another record); any other text is cleaned and truncated with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import String, Table


@dataclass
class Fitted:
    row: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    #: why the record cannot be stored (``row`` is None then)
    reason: str | None = None


@cache
def _limits(table: Table) -> dict[str, int | None]:
    """Column name → maximum length (None: unlimited text) for every string column."""
    out: dict[str, int | None] = {}
    for column in table.columns:
        if isinstance(column.type, String):
            out[column.name] = column.type.length
    return out


def clean_text(value: str) -> tuple[str, list[str]]:
    """Drop NUL bytes and replace lone surrogates with U+FFFD; returns what was done, named."""
    notes: list[str] = []
    if "\x00" in value:
        value = value.replace("\x00", "")
        notes.append("NUL bytes removed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        notes.append("characters that are not valid Unicode replaced")
    return value, notes


def fit_row(table: Table, row: Mapping[str, Any], *, keys: tuple[str, ...]) -> Fitted:
    """Clean and fit every string of ``row`` to ``table``; a key column that does not fit rejects it."""
    limits = _limits(table)
    out = dict(row)
    warnings: list[str] = []
    for name, limit in limits.items():
        value = out.get(name)
        if not isinstance(value, str):
            continue
        cleaned, notes = clean_text(value)
        if name in keys and (notes or (limit is not None and len(cleaned) > limit)):
            problem = ", ".join(notes) if notes else f"{len(cleaned):,} characters, more than the {limit} it can hold"
            return Fitted(None, reason=f"{name} cannot be stored ({problem})")
        if limit is not None and len(cleaned) > limit:
            notes.append(f"truncated from {len(cleaned):,} to {limit} characters")
            cleaned = cleaned[:limit]
        if notes:
            warnings.append(f"{name}: {'; '.join(notes)}")
        out[name] = cleaned or None if name not in keys else cleaned
    return Fitted(out, warnings)
