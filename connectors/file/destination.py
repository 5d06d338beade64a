"""A file destination: one CSV file per audience holding exactly its current members.

Used by the sandbox and the tests, and useful in production as an export for platforms we have no
connector for (a customer-match list to upload by hand). Every batch rewrites the file atomically
(temporary file, fsync, rename, fsync of the folder), so a reader never sees a torn file, a killed
writer leaves the previous version, and a removed or erased person leaves no trace in it. Files are
readable by their owner only.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from connectors.kernel.destination import (
    AudienceKind,
    BatchResult,
    Destination,
    DestinationConfig,
    MappingOptions,
)
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Member


class FileConfig(DestinationConfig):
    type: Literal["file"] = "file"
    directory: Path = Path("var/audiences")
    #: what is written: hashed email (ad-platform style, the default) or the normalized email
    identifier: Literal["email_sha256", "email"] = "email_sha256"
    #: an email list (consent required) or an ad audience (any identifier)
    audience_kind: Literal["email", "ads"] = "ads"
    #: seconds to pause per batch: lets the sandbox and crash tests see a sync in flight
    batch_delay: float = 0.0
    batch_size: int = 1000


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def audience_path(directory: Path, audience: str) -> Path:
    return directory / f"{_SAFE.sub('_', audience)}.csv"


def read_audience(path: Path) -> set[str]:
    """The members of a file audience (the header line names the identifier)."""
    if not path.exists():
        return set()
    with path.open(encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    return {line for line in lines[1:] if line}


def write_audience(path: Path, header: str, members: Iterable[str]) -> None:
    """Replace the file atomically with ``members``, owner-only (see the module doc)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(header + "\n")
            for member in sorted(members):
                handle.write(member + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class FileDestination(Destination):
    kind = "file"
    audience_kind: AudienceKind = "ads"
    batch_size = 1000
    parallel_parts = False
    readable = True
    Config = FileConfig

    def __init__(self, name: str, config: DestinationConfig, runtime: object) -> None:
        super().__init__(name, config, runtime)  # type: ignore[arg-type]
        assert isinstance(config, FileConfig)
        self.file_config = config
        self.audience_kind = config.audience_kind
        self.batch_size = config.batch_size
        #: audience -> (members, the file's (mtime, size) when we last wrote or read it)
        self._cache: dict[str, tuple[set[str], tuple[int, int]]] = {}

    def identity(self, member: Member, options: MappingOptions) -> str:
        assert member.email is not None or member.phone is not None
        value = member.email or member.phone or ""
        return sha256_hex(value) if self.file_config.identifier == "email_sha256" else value

    def ineligible_reason(self, member: Member) -> str | None:
        if not member.email:
            return "no_email"
        return super().ineligible_reason(member)

    def members(self, audience: str, options: MappingOptions | None = None) -> set[str]:
        """The audience's current members (read back: the file destination supports reconcile)."""
        path = audience_path(self.file_config.directory, audience)
        stamp = _stamp(path)
        cached = self._cache.get(audience)
        if cached is None or cached[1] != stamp:
            cached = (read_audience(path), stamp)
            self._cache[audience] = cached
        return set(cached[0])

    def _apply(self, audience: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> BatchResult:
        if self.file_config.batch_delay:
            time.sleep(self.file_config.batch_delay)
        path = audience_path(self.file_config.directory, audience)
        current = self.members(audience)
        current.update(add)
        current.difference_update(remove)
        write_audience(path, self.file_config.identifier, current)
        self._cache[audience] = (current, _stamp(path))
        return BatchResult(accepted=list(dict.fromkeys([*add, *remove])))

    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        return self._apply(audience, add=[self.identity(m, options) for m in members])

    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult:
        return self._apply(audience, remove=identities)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return (0, -1)
    return (info.st_mtime_ns, info.st_size)
