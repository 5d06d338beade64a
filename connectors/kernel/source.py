"""The source contract: pull one stream's records changed since a watermark, page by page.

Pages come in ascending ``updated_at`` order, so the worker can store a page and advance the
watermark to ``page.max_updated_at`` right away: a crash resumes from the last stored page.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from connectors.kernel.bulk import BulkExport
from connectors.kernel.records import Page
from connectors.kernel.runtime import Runtime


class SourceConfig(BaseModel):
    """The ``[source]`` table of the config file; subclasses add their own keys."""

    model_config = ConfigDict(extra="forbid")
    type: str
    #: filled by the worker from the vendor's declared variable, never from the config file
    secret: SecretStr | None = None


class Source(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[SourceConfig]] = SourceConfig
    streams: ClassVar[tuple[str, ...]] = ("customers", "orders")

    def __init__(self, config: SourceConfig, runtime: Runtime, secret: str | None = None) -> None:
        self.config = config
        self.runtime = runtime
        self.secret = secret or (config.secret.get_secret_value() if config.secret is not None else None)

    @abstractmethod
    def pull(self, stream: str, since: datetime | None) -> Iterator[Page]:
        """Yield pages of records updated at or after ``since`` (everything when ``None``)."""

    def bulk_export(self) -> BulkExport | None:
        """The source's bulk export, when it has one (the first pull of a large store uses it)."""
        return None

    def stats(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        return None
