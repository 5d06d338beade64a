"""One contract suite for every destination, run against its emulator.

A vendor test module subclasses :class:`DestinationContract` as ``TestXxxContract`` and fills in
the hooks (a dozen lines); pytest then collects every ``test_*`` below for it, as singer-sdk's
test factory does. Sleeps are injected: intended waits are recorded, never slept.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from connectors.kernel.destination import Destination, DestinationConfig, MappingOptions
from connectors.kernel.emulator import EmulatorServer, Faults
from connectors.kernel.errors import ConfigError
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime
from connectors.kernel.vendor import destination_class


class DestinationContract:
    """Hooks to fill in; everything else is shared."""

    destination_type: ClassVar[str]
    audience: ClassVar[str]
    secret: ClassVar[str]
    #: most members the platform takes in one request (checked in the emulator's log)
    request_limit: ClassVar[int]
    #: paths of batch requests whose ``items`` the limit applies to (substring match)
    batch_paths: ClassVar[tuple[str, ...]]

    def make_emulator(self) -> EmulatorServer:
        raise NotImplementedError

    def prepare(self, emulator: Any) -> None:
        """Seed what a real account would already have (a list, an audience)."""

    def make_config(self, emulator: Any, secret: str) -> DestinationConfig:
        raise NotImplementedError

    def options(self) -> MappingOptions:
        raise NotImplementedError

    def members_in(self, emulator: Any) -> set[str]:
        """The identities the emulator currently holds in the audience."""
        raise NotImplementedError

    def refused_member(self, emulator: Any) -> Member:
        """A member the platform will refuse (arranging emulator state if needed)."""
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

    # -- fixtures -------------------------------------------------------------------
    @pytest.fixture
    def emulator(self) -> Iterator[Any]:
        emu = self.make_emulator()
        emu.start()
        self.prepare(emu)
        try:
            yield emu
        finally:
            emu.stop()

    @pytest.fixture
    def waits(self) -> list[float]:
        return []

    @pytest.fixture
    def runtime(self, waits: list[float]) -> Runtime:
        return Runtime(sleep=waits.append, key_prefix=f"test-{uuid.uuid4().hex}")

    def build(self, emulator: Any, runtime: Runtime, secret: str | None = None) -> Destination:
        cls = destination_class(self.destination_type)
        destination: Destination = cls("contract", self.make_config(emulator, secret or self.secret), runtime)
        return destination

    @pytest.fixture
    def destination(self, emulator: Any, runtime: Runtime) -> Iterator[Destination]:
        destination = self.build(emulator, runtime)
        try:
            yield destination
        finally:
            destination.close()

    def ids(self, destination: Destination, members: list[Member]) -> set[str]:
        return {destination.identity(m, self.options()) for m in members}

    # -- the contract ---------------------------------------------------------------------
    def test_add(self, destination: Destination, emulator: Any) -> None:
        members = [self.member(i) for i in range(10)]
        result = destination.add(self.audience, members, self.options())
        assert result.rejected == []
        assert set(result.accepted) == self.ids(destination, members)
        assert self.members_in(emulator) == self.ids(destination, members)

    def test_remove(self, destination: Destination, emulator: Any) -> None:
        members = [self.member(i) for i in range(10)]
        destination.add(self.audience, members, self.options())
        gone = sorted(self.ids(destination, members[:3]))
        result = destination.remove(self.audience, gone, self.options())
        assert sorted(result.accepted) == gone and result.rejected == []
        assert self.members_in(emulator) == self.ids(destination, members[3:])

    def test_replaying_a_batch_is_idempotent(self, destination: Destination, emulator: Any) -> None:
        members = [self.member(i) for i in range(5)]
        first = destination.add(self.audience, members, self.options())
        second = destination.add(self.audience, members, self.options())
        assert sorted(first.accepted) == sorted(second.accepted) and second.rejected == []
        assert self.members_in(emulator) == self.ids(destination, members)
        gone = sorted(self.ids(destination, members[:2]))
        destination.remove(self.audience, gone, self.options())
        again = destination.remove(self.audience, gone, self.options())
        assert sorted(again.accepted) == gone and again.rejected == []
        assert self.members_in(emulator) == self.ids(destination, members[2:])

    def test_partial_failure_is_recorded(self, destination: Destination, emulator: Any) -> None:
        good = [self.member(i) for i in range(4)]
        bad = self.refused_member(emulator)
        result = destination.add(self.audience, [*good, bad], self.options())
        bad_id = destination.identity(bad, self.options())
        assert [r.identity for r in result.rejected] == [bad_id]
        assert result.rejected[0].reason and result.rejected[0].code
        assert set(result.accepted) == self.ids(destination, good)
        assert self.members_in(emulator) == self.ids(destination, good)

    def test_throttling_is_survived_without_sleeping(
        self, destination: Destination, emulator: Any, waits: list[float]
    ) -> None:
        emulator.faults.throttle_storm = 3
        members = [self.member(i) for i in range(3)]
        started = time.monotonic()
        result = destination.add(self.audience, members, self.options())
        assert time.monotonic() - started < 5
        assert set(result.accepted) == self.ids(destination, members)
        assert len(waits) >= 3 and all(w > 0 for w in waits)
        assert destination.stats()["throttled"] >= 3
        assert sum(1 for r in emulator.log if r.status in (400, 429)) == 3

    def test_bad_credentials_are_a_config_error_without_the_secret(
        self, emulator: Any, runtime: Runtime, caplog: pytest.LogCaptureFixture
    ) -> None:
        wrong = "wrong-" + self.secret
        destination = self.build(emulator, runtime, secret=wrong)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(ConfigError) as info:
            destination.add(self.audience, [self.member(1)], self.options())
        destination.close()
        text = str(info.value) + info.value.message + caplog.text
        assert wrong not in text and self.secret not in text
        assert len(emulator.log) == 1, "an auth failure must not be retried"

    def test_replace(self, destination: Destination, emulator: Any) -> None:
        if not destination.supports_replace:
            pytest.skip(f"{self.destination_type} has no native replace")
        destination.add(self.audience, [self.member(i) for i in range(10)], self.options())
        wanted = [self.member(i) for i in range(5, 15)]
        result = destination.replace(self.audience, [wanted[:4], wanted[4:]], self.options())
        assert set(result.accepted) == self.ids(destination, wanted)
        assert self.members_in(emulator) == self.ids(destination, wanted)

    def test_batch_limit_is_never_exceeded(self, destination: Destination, emulator: Any) -> None:
        members = [self.member(i) for i in range(self.request_limit * 2 + 1)]
        result = destination.add(self.audience, members, self.options())
        assert len(result.accepted) == len(members)
        batches = [r for r in emulator.log if r.items is not None and any(p in r.path for p in self.batch_paths)]
        assert batches and all(r.items <= self.request_limit for r in batches if r.items is not None)
        assert all(r.status == 200 for r in batches)
        assert self.members_in(emulator) == self.ids(destination, members)

    def test_faults_and_throttle_storm_still_converge(
        self, destination: Destination, emulator: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        emulator.faults = Faults(error_rate=0.1, reset_rate=0.02, seed=11)
        emulator.faults.throttle_storm = 4
        members = [self.member(i) for i in range(60)]
        for start in range(0, 60, 3):
            destination.add(self.audience, members[start : start + 3], self.options())
            if start == 30:
                emulator.faults.throttle_storm = 5
        gone = sorted(self.ids(destination, members[:10]))
        destination.remove(self.audience, gone[:5], self.options())
        destination.remove(self.audience, gone[5:], self.options())
        assert self.members_in(emulator) == self.ids(destination, members[10:])
        assert any(r.status >= 500 for r in emulator.log), "the 5xx injection did not fire"
        assert sum(1 for r in emulator.log if r.status in (400, 429)) >= 9, "the storms did not fire"
        assert "@example.com" not in caplog.text
