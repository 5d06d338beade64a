"""Contract-suite hooks: what a vendor tells the generated suite so it can test its connector.

The suite itself (``tests/test_contracts.py``) runs over every registered vendor that declares hooks,
as singer-sdk's test factory does: registering a vendor is enough for its connector to be tested
against its emulator. Hooks are plain classes (no test framework here): how to start the emulator,
build a config for it, read what it holds, and make it refuse a member.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from connectors.kernel.destination import DestinationConfig, MappingOptions
from connectors.kernel.emulator import EmulatorServer
from connectors.kernel.records import Consent, Member
from connectors.kernel.source import SourceConfig


class DestinationHooks:
    audience: ClassVar[str]
    #: the credential the emulator accepts
    secret: ClassVar[str] = ""
    #: most members the platform takes in one request, and the paths of those requests (substring)
    request_limit: ClassVar[int]
    batch_paths: ClassVar[tuple[str, ...]] = ()
    #: HTTP statuses of the platform's throttle answer (Meta: 400 with a code; TikTok: 200 envelope)
    throttle_statuses: ClassVar[tuple[int, ...]] = (429,)
    #: the platform refuses single members (partial failure) and the hooks can make it
    refuses_members: ClassVar[bool] = True

    def make_emulator(self) -> EmulatorServer | None:
        """The vendor's emulator, not yet started (None: no HTTP, e.g. the file destination)."""
        return None

    def prepare(self, emulator: Any) -> None:
        """Seed what a real account would already have (a list, an audience)."""

    def make_config(self, emulator: Any, secret: str, workdir: Path) -> DestinationConfig:
        raise NotImplementedError

    def options(self) -> MappingOptions:
        raise NotImplementedError

    def members_in(self, emulator: Any, audience: str, options: MappingOptions, workdir: Path) -> set[str]:
        """The identities ``audience`` holds now, in our identity format, read from the emulator's own
        state (or the file in ``workdir``): what a person would see at the platform."""
        raise NotImplementedError

    def refused_member(self, emulator: Any) -> Member:
        """A member the platform will refuse (arranging emulator state if needed)."""
        raise NotImplementedError

    def throttle_answers(self, emulator: Any) -> int:
        """How many throttle answers the emulator gave (by status; override for a 200 envelope)."""
        return sum(1 for r in emulator.log if r.status in self.throttle_statuses)

    def refusing(self, emulator: Any, member: Member) -> Member:
        """``member`` changed (or the emulator arranged) so that the platform refuses it: for the
        at-scale run, which mixes refused members into 50,000."""
        raise NotImplementedError

    def member(self, i: int) -> Member:
        return Member(
            key=f"c{i}",
            email=f"person{i}@example.com",
            phone=f"+1212555{i % 10000:04d}",
            first_name=f"Name{chr(97 + i % 26)}",
            last_name="Müller",
            country="US",
            email_consent=Consent.SUBSCRIBED,
        )


class SourceHooks:
    """A source's suite: pulls against a world (emulator plus the data it serves) that can move on."""

    secret: ClassVar[str] = ""
    streams: ClassVar[tuple[str, ...]] = ("customers", "orders")

    def make_world(self, **emulator_options: Any) -> Any:
        """An object with ``emulator`` (not started) and whatever the other hooks need. The options
        include ``clock``, the suite's fake time (sleeping moves it), and any ``faults``."""
        raise NotImplementedError

    def make_config(self, world: Any) -> SourceConfig:
        raise NotImplementedError

    def expected_ids(self, world: Any, stream: str) -> set[str]:
        """Ids of every record of ``stream`` the world holds (the malformed ones included)."""
        raise NotImplementedError

    def advance(self, world: Any) -> dict[str, set[str]]:
        """Move the world on (new and changed records); the ids touched, per stream."""
        raise NotImplementedError

    def throttle(self, world: Any) -> None:
        """Make the next requests throttled the vendor's way."""
        raise NotImplementedError
