"""What an emulated service holds, saved to and loaded from JSON (the sandbox keeps it between runs).

Sets, tuples, datetimes and dicts with non-string keys survive the round trip; the file is written
atomically and readable by its owner only (a sandbox's audiences are people's addresses too).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any


def encode(value: Any) -> Any:
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__map__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, set | frozenset):
        return {"__set__": [encode(v) for v in value]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__map__" in value:
        return {decode(k): decode(v) for k, v in value["__map__"]}
    if "__set__" in value:
        return {decode(v) for v in value["__set__"]}
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__datetime__" in value:
        return datetime.fromisoformat(value["__datetime__"])
    return {k: decode(v) for k, v in value.items()}


def save_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (temporary file, fsync, rename), owner-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(encode(data), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return decode(json.load(handle))
