"""The destination base the sync engine drives, and what every vendor's destination shares.

A destination says who is eligible, what identity it stores for a member (the value it can later
remove by), and sends one batch of adds or removes, reporting exactly which identities it accepted
and which it rejected with a reason. Batching, acknowledgement and retries of whole runs are the
engine's job; retrying a request is the HTTP core's. The base owns the rest: the client, built on
first use (so eligibility and identity need no credentials) and closed once; the credential, with a
message naming its variable when it is missing; counters and request statistics for the run summary;
splitting a batch to the vendor's request limit; reading options of the right type.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from connectors.kernel.errors import ConfigError
from connectors.kernel.http import HttpConnector
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime

T = TypeVar("T")
OptionsT = TypeVar("OptionsT", bound="MappingOptions")


class DestinationConfig(BaseModel):
    """A ``[destinations.NAME]`` table of the config file; subclasses add their own keys."""

    model_config = ConfigDict(extra="forbid")
    type: str
    #: filled by the worker from the vendor's declared variable, never from the config file
    secret: SecretStr | None = None


class MappingOptions(BaseModel):
    """Per-mapping options a destination understands (``[mappings.options]``)."""

    model_config = ConfigDict(extra="forbid")


class KeyedOptions(MappingOptions):
    """Options of a destination that matches on a chosen list of identifier keys (Meta, Google,
    TikTok): a subclass narrows ``keys`` to its own key names and default."""

    #: what the error adds about the allowed keys
    keys_hint: ClassVar[str] = ""
    keys: list[Any]

    @field_validator("keys")
    @classmethod
    def _distinct(cls, keys: list[Any]) -> list[Any]:
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"keys must be a non-empty list{cls.keys_hint} without repeats")
        return keys


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


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Destination(ABC):
    kind: ClassVar[str]
    #: instance-level so a configurable destination (file) can set them from its config
    audience_kind: AudienceKind
    batch_size: int
    Config: ClassVar[type[DestinationConfig]] = DestinationConfig
    Options: ClassVar[type[MappingOptions]] = MappingOptions
    #: a full replace can be done natively (Meta usersreplace); otherwise the engine diffs
    supports_replace: ClassVar[bool] = False
    #: the audience's members can be read back (``audience-sync reconcile`` compares them)
    readable: ClassVar[bool] = False
    #: an ad platform's name and the matched members it needs before an audience can be targeted
    targeting_minimum: ClassVar[tuple[str, int] | None] = None
    #: members expire at the platform unless re-sent within this many days (Customer Match: 540);
    #: the engine re-sends acknowledged members before then
    membership_ttl_days: ClassVar[int | None] = None
    #: a large diff may be sent as parts by several workers at once (a local file may not: each
    #: write rewrites it whole)
    parallel_parts: ClassVar[bool] = True

    def __init__(self, name: str, config: DestinationConfig, runtime: Runtime) -> None:
        self.name = name
        self.config = config
        self.runtime = runtime
        #: per-mapping values kept between runs (the sync engine binds the store's before a run)
        self.memory: Memory = LocalMemory()
        #: the vendor's own counters, reported with the request statistics
        self.counters: Counter[str] = Counter()
        self._client: HttpConnector | None = None
        self._client_lock = threading.Lock()

    # -- the client ----------------------------------------------------------------------
    @property
    def client(self) -> HttpConnector:
        """Built on first use, so eligibility and identity work without credentials."""
        with self._client_lock:
            if self._client is None:
                self._client = self.build_client()
            return self._client

    def build_client(self) -> HttpConnector:
        raise NotImplementedError(f"{self.kind} speaks no HTTP")

    def credential(self) -> str:
        if self.config.secret is None or not self.config.secret.get_secret_value():
            from connectors.kernel.vendor import vendors

            variable = vendors().get(self.kind, None)
            where = f" (set {variable.secrets['secret']})" if variable and "secret" in variable.secrets else ""
            raise ConfigError(f"{self.kind}: no credentials{where}")
        return self.config.secret.get_secret_value()

    def opts(self, options: MappingOptions, cls: type[OptionsT]) -> OptionsT:
        if not isinstance(options, cls):
            raise TypeError(f"{self.kind}: options must be {cls.__name__}, not {type(options).__name__}")
        return options

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

    def prepare(self, audience: str, options: MappingOptions) -> None:
        """Resolve (or create) what every batch needs before parts are sent in parallel: made here
        once, never by parts racing (Mailchimp's segment)."""
        return None

    def replace(self, audience: str, batches: Iterable[Sequence[Member]], options: MappingOptions) -> BatchResult:
        """Replace the whole audience in one session (only where ``supports_replace``)."""
        raise NotImplementedError(f"{self.kind} has no native replace")

    def validate(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult | None:
        """Ask the platform whether it would accept ``members`` without changing anything (a dry run);
        None when the platform has no such mode (the dry run then shows our own plan only)."""
        return None

    def members(self, audience: str, options: MappingOptions) -> set[str]:
        """The identities the audience holds now, read back from the platform (where ``readable``)."""
        raise NotImplementedError(f"{self.kind} cannot list an audience's members")

    def stats(self) -> dict[str, Any]:
        """Requests, retries, throttles and waits, and the vendor's own counters, for the run summary."""
        out: dict[str, Any] = dict(self.counters)
        if self._client is not None:
            s = self._client.stats
            out.update(
                requests=self._client.requests,
                retries=s.retries,
                throttled=s.throttled,
                waited_seconds=round(s.waited_seconds, 3),
            )
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
