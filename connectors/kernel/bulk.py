"""Bulk export: a source that can hand over a whole stream as one file, instead of pages.

A first pull of a large store is the case: paging a million orders through a rate-limited API takes
hours, while the store can produce the same records as a file in minutes. The source starts an
export (:meth:`BulkExport.start`), the worker polls it (:meth:`BulkExport.check`), downloads the
file (resumable: :func:`download_resumable`) and reads it in chunks (:meth:`BulkExport.read`).
Everything about progress lives in the worker's store (``worker/backfill.py``), so a killed worker
resumes at the last stored chunk; this module holds no state.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from connectors.kernel.errors import PermanentError, RetryableError
from connectors.kernel.records import LineItem, Page

#: states in which an export may still produce a file
UNFINISHED = frozenset({"CREATED", "RUNNING", "CANCELING"})


@dataclass
class BulkJob:
    """An export as the source last reported it."""

    id: str
    status: str
    created_at: datetime | None = None
    url: str | None = None
    partial_url: str | None = None
    error_code: str | None = None
    object_count: int = 0
    file_size: int | None = None

    @property
    def running(self) -> bool:
        return self.status in UNFINISHED


@dataclass(frozen=True)
class ChildLine:
    """A line item that arrived on its own line of the file, pointing at its order."""

    parent_id: str
    key: str
    line: LineItem


@dataclass
class BulkChunk:
    """Records read from the file, and the byte offset right after them (where the next chunk starts)."""

    page: Page
    children: list[ChildLine] = field(default_factory=list)
    end: int = 0


class BulkStartRefused(PermanentError):
    """The source would not start an export (another one runs, a limit, an invalid query)."""


class BulkUrlExpired(PermanentError):
    """The file's address no longer works (they expire): the export must run again."""


class BulkExport(ABC):
    #: streams this source can export in bulk
    streams: tuple[str, ...] = ()
    #: how long a finished export's address stays valid
    url_lifetime_seconds: float = 7 * 24 * 3600

    @abstractmethod
    def start(self, stream: str) -> BulkJob:
        """Start exporting every record of ``stream``."""

    @abstractmethod
    def check(self, job_id: str) -> BulkJob | None:
        """The export's current state; ``None`` when the source no longer knows it."""

    @abstractmethod
    def download(self, url: str, dest: Path, progress: Callable[[int], None] | None = None) -> int:
        """Download ``url`` into ``dest``, continuing after the bytes already there; returns the size."""

    @abstractmethod
    def read(self, stream: str, path: Path, offset: int, rows: int) -> Iterator[BulkChunk]:
        """Chunks of about ``rows`` records from byte ``offset`` of a downloaded file."""

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None


def download_resumable(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    progress: Callable[[int], None] | None = None,
    attempts: int = 8,
    sleep: Callable[[float], None] = time.sleep,
    block: int = 1 << 16,
) -> int:
    """Stream ``url`` into ``dest`` (owner-only), asking for the rest with ``Range`` when part of it is
    there already. A dropped connection continues from the bytes written; a server that ignores the
    range (200 instead of 206) gets the file rewritten from the start. 400/401/403/404/410 mean the
    address expired (a signed storage URL past its lifetime answers 400 ``ExpiredToken``). Returns the
    file's final size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    while True:
        have = dest.stat().st_size if dest.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and have:  # nothing left to send: the file is whole
                    return have
                if response.status_code in (400, 401, 403, 404, 410):
                    raise BulkUrlExpired(f"the export's download address answered {response.status_code}")
                if response.status_code >= 400:
                    raise RetryableError(f"download answered {response.status_code}")
                append = response.status_code == 206 and have > 0
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
                fd = os.open(dest, flags, 0o600)
                with os.fdopen(fd, "wb") as out:
                    written = have if append else 0
                    for piece in response.iter_bytes(block):
                        out.write(piece)
                        written += len(piece)
                        if progress is not None:
                            progress(written)
                    out.flush()
                    os.fsync(out.fileno())
                return dest.stat().st_size
        except (httpx.TransportError, RetryableError):
            failures += 1
            if failures >= attempts:
                raise RetryableError(f"download kept failing after {failures} attempts") from None
            sleep(min(30.0, 0.5 * 2**failures))
