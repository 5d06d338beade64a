"""The destination contract the sync engine drives.

A destination says who is eligible, what identity it stores for a member (the value it can later
remove by), and sends one batch of adds or removes, reporting exactly which identities it accepted
and which it rejected with a reason. Batching, acknowledgement and retries of whole runs are the
engine's job; retrying a request is the HTTP core's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime


class DestinationConfig(BaseModel):
    """A ``[destinations.NAME]`` table of the config file; subclasses add their own keys."""

    model_config = ConfigDict(extra="forbid")
    type: str


class MappingOptions(BaseModel):
    """Per-mapping options a destination understands (``[mappings.options]``)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Rejection:
    identity: str
    reason: str
    code: str = "rejected"


@dataclass
class BatchResult:
    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


AudienceKind = Literal["email", "ads", "file"]


class Memory(Protocol):
    """Values a destination keeps per mapping between runs (the engine backs it with the store)."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class LocalMemory:
    """Memory for one process only: what a destination uses outside a sync run (tests, preview)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self._values.get(key)

    def set(self, key: str, value: Any) -> None:
        self._values[key] = value


class Destination(ABC):
    kind: ClassVar[str]
    #: instance-level so a configurable destination (file) can set them from its config
    audience_kind: AudienceKind
    batch_size: int
    Config: ClassVar[type[DestinationConfig]] = DestinationConfig
    Options: ClassVar[type[MappingOptions]] = MappingOptions
    #: a full replace can be done natively (Meta usersreplace); otherwise the engine diffs
    supports_replace: ClassVar[bool] = False
    #: an ad platform's name and the matched members it needs before an audience can be targeted
    targeting_minimum: ClassVar[tuple[str, int] | None] = None

    def __init__(self, name: str, config: DestinationConfig, runtime: Runtime) -> None:
        self.name = name
        self.config = config
        self.runtime = runtime
        #: per-mapping values kept between runs (the sync engine binds the store's before a run)
        self.memory: Memory = LocalMemory()

    # -- eligibility and identity (pure) ------------------------------------------------
    def ineligible_reason(self, member: Member) -> str | None:
        """Why ``member`` may not be sent here, or ``None``. Email lists need consent."""
        if self.audience_kind == "email":
            if not member.email:
                return "no_email"
            if member.email_consent != Consent.SUBSCRIBED:
                return "no_consent"
        elif not (member.email or member.phone):
            return "no_identifier"
        return None

    def removes_members(self, options: MappingOptions) -> bool:
        """False when the mapping's options ask never to remove (the engine then only removes the erased)."""
        return True

    @abstractmethod
    def identity(self, member: Member, options: MappingOptions) -> str:
        """The value stored as acknowledged and later used to remove the member."""

    # -- I/O ---------------------------------------------------------------------------
    @abstractmethod
    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult: ...

    @abstractmethod
    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult: ...

    def replace(self, audience: str, batches: Iterable[Sequence[Member]], options: MappingOptions) -> BatchResult:
        """Replace the whole audience in one session (only where ``supports_replace``)."""
        raise NotImplementedError(f"{self.kind} has no native replace")

    def stats(self) -> dict[str, Any]:
        """Request/retry counters for the run summary."""
        return {}

    def close(self) -> None:
        return None
