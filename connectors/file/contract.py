"""Contract-suite hooks for the file destination: no HTTP; the file is what the platform holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.file.destination import FileConfig, audience_path, read_audience
from connectors.kernel.contract import DestinationHooks
from connectors.kernel.destination import MappingOptions
from connectors.kernel.records import Member


class FileContract(DestinationHooks):
    audience = "contract"
    request_limit = 1000
    refuses_members = False  # a file takes everyone it is given

    def make_config(self, emulator: Any, secret: str, workdir: Path) -> FileConfig:
        return FileConfig(directory=workdir, identifier="email_sha256", batch_size=self.request_limit)

    def options(self) -> MappingOptions:
        return MappingOptions()

    def members_in(self, emulator: Any, audience: str, options: MappingOptions, workdir: Path) -> set[str]:
        return read_audience(audience_path(workdir, audience))

    def refused_member(self, emulator: Any) -> Member:
        raise NotImplementedError("a file refuses no member")
