"""A file destination: one JSON-lines file per audience, appending timestamped add/remove records.

Used by the sandbox and the tests, and useful in production as an export for platforms we have no
connector for. Replaying a record is harmless: the audience is the fold of the log.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from connectors.destinations.base import (
    AudienceKind,
    BatchResult,
    Destination,
    DestinationConfig,
    MappingOptions,
)
from connectors.identifiers import sha256_hex
from connectors.records import Member
from connectors.registry import register_destination


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
    return directory / f"{_SAFE.sub('_', audience)}.jsonl"


def read_audience(path: Path) -> set[str]:
    """The current members of a file audience: the fold of its add/remove log."""
    members: set[str] = set()
    if not path.exists():
        return members
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn write from a killed worker; that batch was re-sent

            if record["op"] == "add":
                members.add(record["id"])
            else:
                members.discard(record["id"])
    return members


@register_destination("file")
class FileDestination(Destination):
    kind = "file"
    audience_kind: AudienceKind = "ads"
    batch_size = 1000
    Config = FileConfig

    def __init__(self, name: str, config: DestinationConfig, runtime: object) -> None:
        super().__init__(name, config, runtime)  # type: ignore[arg-type]
        assert isinstance(config, FileConfig)
        self.file_config = config
        self.audience_kind = config.audience_kind
        self.batch_size = config.batch_size

    def identity(self, member: Member, options: MappingOptions) -> str:
        assert member.email is not None or member.phone is not None
        value = member.email or member.phone or ""
        return sha256_hex(value) if self.file_config.identifier == "email_sha256" else value

    def ineligible_reason(self, member: Member) -> str | None:
        if not member.email:
            return "no_email"
        return super().ineligible_reason(member)

    def _append(self, audience: str, op: str, identities: Sequence[str]) -> BatchResult:
        if self.file_config.batch_delay:
            time.sleep(self.file_config.batch_delay)
        path = audience_path(self.file_config.directory, audience)
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat()
        lines = "".join(json.dumps({"ts": stamp, "op": op, "id": i}) + "\n" for i in identities)
        payload = lines.encode("utf-8")
        with path.open("ab+") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    # a writer killed mid-line left a torn record: fence it off (the reader skips it,
                    # and its batch was never acknowledged, so it is sent again)
                    payload = b"\n" + payload
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        return BatchResult(accepted=list(identities))

    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        return self._append(audience, "add", [self.identity(m, options) for m in members])

    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult:
        return self._append(audience, "remove", identities)
