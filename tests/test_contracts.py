"""One contract suite, generated over every registered vendor that declares hooks (singer-sdk's model).

Registering a vendor (its folder's ``VENDOR``, with ``contract`` hooks) is enough for its destination or
source to be tested here against its emulator: adds, removes, idempotent replays, partial failures,
throttling (waits recorded, never slept), bad credentials, native replace, request limits, read-back,
and convergence under 5xx storms; for sources, complete and incremental pulls under the same faults.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.kernel.contract import DestinationHooks, SourceHooks
from connectors.kernel.destination import Destination
from connectors.kernel.emulator import Faults
from connectors.kernel.errors import ConfigError
from connectors.kernel.records import Member
from connectors.kernel.runtime import Runtime
from connectors.kernel.source import Source
from connectors.kernel.vendor import destination_class, source_class, vendors


def _hooked(kind: str, base: type[Any]) -> list[str]:
    return sorted(
        name
        for name, v in vendors().items()
        if getattr(v, kind) is not None and v.contract is not None and issubclass(v.part("contract"), base)
    )


DESTINATIONS = _hooked("destination", DestinationHooks)
SOURCES = _hooked("source", SourceHooks)


def test_every_vendor_with_a_connector_is_in_the_suite() -> None:
    for name, declared in vendors().items():
        if declared.destination or declared.source:
            assert declared.contract, f"{name} declares no contract hooks: it would go untested"
    assert {"file", "mailchimp", "meta"} <= set(DESTINATIONS) and "shopify" in SOURCES


# -- destinations ---------------------------------------------------------------------------------------
class Rig:
    def __init__(self, vendor: str, workdir: Path) -> None:
        self.vendor = vendor
        self.hooks: DestinationHooks = vendors()[vendor].part("contract")()
        self.workdir = workdir
        self.waits: list[float] = []
        self.runtime = Runtime(sleep=self.waits.append, key_prefix=f"test-{uuid.uuid4().hex}")
        self.emulator = self.hooks.make_emulator()
        self.built: list[Destination] = []

    def __enter__(self) -> Rig:
        if self.emulator is not None:
            self.emulator.start()
            self.hooks.prepare(self.emulator)
        return self

    def __exit__(self, *exc: object) -> None:
        for destination in self.built:
            destination.close()
        if self.emulator is not None:
            self.emulator.stop()

    def build(self, secret: str | None = None) -> Destination:
        config = self.hooks.make_config(
            self.emulator, secret if secret is not None else self.hooks.secret, self.workdir
        )
        destination: Destination = destination_class(self.vendor)("contract", config, self.runtime)
        self.built.append(destination)
        return destination

    def held(self) -> set[str]:
        return self.hooks.members_in(self.emulator, self.hooks.audience, self.hooks.options(), self.workdir)

    def ids(self, destination: Destination, members: list[Member]) -> set[str]:
        return {destination.identity(m, self.hooks.options()) for m in members}

    def add(self, destination: Destination, members: list[Member]) -> Any:
        return destination.add(self.hooks.audience, members, self.hooks.options())

    def remove(self, destination: Destination, identities: list[str]) -> Any:
        return destination.remove(self.hooks.audience, identities, self.hooks.options())

    def needs_emulator(self) -> None:
        if self.emulator is None:
            pytest.skip(f"{self.vendor} speaks no HTTP: nothing to throttle, fault or authenticate")


@pytest.fixture(params=DESTINATIONS)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    with Rig(request.param, tmp_path) as built:
        yield built


def test_add(rig: Rig) -> None:
    destination = rig.build()
    members = [rig.hooks.member(i) for i in range(10)]
    result = rig.add(destination, members)
    assert result.rejected == []
    assert set(result.accepted) == rig.ids(destination, members) == rig.held()


def test_remove(rig: Rig) -> None:
    destination = rig.build()
    members = [rig.hooks.member(i) for i in range(10)]
    rig.add(destination, members)
    gone = sorted(rig.ids(destination, members[:3]))
    result = rig.remove(destination, gone)
    assert sorted(result.accepted) == gone and result.rejected == []
    assert rig.held() == rig.ids(destination, members[3:])


def test_replaying_a_batch_is_idempotent(rig: Rig) -> None:
    destination = rig.build()
    members = [rig.hooks.member(i) for i in range(5)]
    first, second = rig.add(destination, members), rig.add(destination, members)
    assert sorted(first.accepted) == sorted(second.accepted) and second.rejected == []
    assert rig.held() == rig.ids(destination, members)
    gone = sorted(rig.ids(destination, members[:2]))
    rig.remove(destination, gone)
    again = rig.remove(destination, gone)  # removing someone absent is harmless
    assert sorted(again.accepted) == gone and again.rejected == []
    assert rig.held() == rig.ids(destination, members[2:])


def test_partial_failure_is_recorded(rig: Rig) -> None:
    if not rig.hooks.refuses_members:
        pytest.skip(f"{rig.vendor} refuses no single member")
    destination = rig.build()
    good = [rig.hooks.member(i) for i in range(4)]
    bad = rig.hooks.refused_member(rig.emulator)
    result = rig.add(destination, [*good, bad])
    assert [r.identity for r in result.rejected] == [destination.identity(bad, rig.hooks.options())]
    assert result.rejected[0].reason and result.rejected[0].code
    assert set(result.accepted) == rig.ids(destination, good) == rig.held()


def test_throttling_is_survived_without_sleeping(rig: Rig) -> None:
    rig.needs_emulator()
    assert rig.emulator is not None
    destination = rig.build()
    rig.emulator.faults.throttle_storm = 3
    members = [rig.hooks.member(i) for i in range(3)]
    started = time.monotonic()
    result = rig.add(destination, members)
    assert time.monotonic() - started < 5
    assert set(result.accepted) == rig.ids(destination, members)
    assert len(rig.waits) >= 3 and all(w > 0 for w in rig.waits)
    assert destination.stats()["throttled"] >= 3
    assert rig.hooks.throttle_answers(rig.emulator) == 3


def test_bad_credentials_are_a_config_error_without_the_secret(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.needs_emulator()
    assert rig.emulator is not None
    wrong = "wrong-" + rig.hooks.secret
    destination = rig.build(secret=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as info:
        rig.add(destination, [rig.hooks.member(1)])
    text = str(info.value) + info.value.message + caplog.text
    assert wrong not in text and rig.hooks.secret not in text
    assert len(rig.emulator.log) == 1, "an auth failure must not be retried"


def test_replace(rig: Rig) -> None:
    destination = rig.build()
    if not destination.supports_replace:
        pytest.skip(f"{rig.vendor} has no native replace (the engine diffs instead)")
    rig.add(destination, [rig.hooks.member(i) for i in range(10)])
    wanted = [rig.hooks.member(i) for i in range(5, 15)]
    result = destination.replace(rig.hooks.audience, [wanted[:4], wanted[4:]], rig.hooks.options())
    assert set(result.accepted) == rig.ids(destination, wanted) == rig.held()


def test_request_limit_is_never_exceeded(rig: Rig) -> None:
    destination = rig.build()
    members = [rig.hooks.member(i) for i in range(rig.hooks.request_limit * 2 + 1)]
    result = rig.add(destination, members)
    assert len(result.accepted) == len(members)
    assert rig.held() == rig.ids(destination, members)
    if rig.emulator is not None:
        batches = [
            r for r in rig.emulator.log if r.items is not None and any(p in r.path for p in rig.hooks.batch_paths)
        ]
        assert batches and all(r.items <= rig.hooks.request_limit for r in batches if r.items is not None)


def test_what_is_read_back_is_what_the_platform_holds(rig: Rig) -> None:
    destination = rig.build()
    if not destination.readable:
        pytest.skip(f"{rig.vendor} cannot list an audience's members (reconcile says so)")
    rig.add(destination, [rig.hooks.member(i) for i in range(12)])
    assert destination.members(rig.hooks.audience, rig.hooks.options()) == rig.held()


def test_faults_and_throttle_storms_still_converge(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.needs_emulator()
    assert rig.emulator is not None
    destination = rig.build()
    rig.emulator.faults = Faults(error_rate=0.1, reset_rate=0.02, seed=11, throttle_storm=4)
    members = [rig.hooks.member(i) for i in range(60)]
    for start in range(0, 60, 3):
        rig.add(destination, members[start : start + 3])
        if start == 30:
            rig.emulator.faults.throttle_storm = 5
    gone = sorted(rig.ids(destination, members[:10]))
    rig.remove(destination, gone[:5])
    rig.remove(destination, gone[5:])
    assert rig.held() == rig.ids(destination, members[10:])
    assert any(r.status >= 500 for r in rig.emulator.log), "the 5xx injection did not fire"
    assert "@example.com" not in caplog.text


# -- sources ------------------------------------------------------------------------------------------
class SourceRig:
    """Time is fake: the source's sleeps move the emulator's clock (a throttle bucket refills), instantly."""

    def __init__(self, vendor: str, **emulator_options: Any) -> None:
        self.vendor = vendor
        self.hooks: SourceHooks = vendors()[vendor].part("contract")()
        self.now = 0.0
        self.world = self.hooks.make_world(clock=lambda: self.now, **emulator_options)
        self.waits: list[float] = []
        self.built: list[Source] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def __enter__(self) -> SourceRig:
        self.world.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for source in self.built:
            source.close()
        self.world.emulator.stop()

    def source(self, secret: str | None = None) -> Source:
        runtime = Runtime(sleep=self.sleep, key_prefix=f"test-{uuid.uuid4().hex}")
        config = self.hooks.make_config(self.world)
        built: Source = source_class(self.vendor)(config, runtime, secret or self.hooks.secret)
        self.built.append(built)
        return built

    def pulled(self, source: Source, stream: str, since: Any = None) -> tuple[set[str], list[Any]]:
        ids: set[str] = set()
        pages = list(source.pull(stream, since))
        for page in pages:
            ids |= {o.order_id for o in page.orders} | {c.customer_id for c in page.customers}
            ids |= {p.ref for p in page.problems}
        return ids, pages


@pytest.fixture(params=SOURCES)
def source_rig(request: pytest.FixtureRequest) -> Iterator[SourceRig]:
    with SourceRig(request.param) as built:
        yield built


def test_a_full_pull_reads_every_record_once_in_update_order(source_rig: SourceRig) -> None:
    source = source_rig.source()
    for stream in source_rig.hooks.streams:
        ids, pages = source_rig.pulled(source, stream)
        assert ids == source_rig.hooks.expected_ids(source_rig.world, stream)
        records = [r for p in pages for r in [*p.orders, *p.customers]]
        assert len(records) == len({getattr(r, "order_id", None) or r.customer_id for r in records})
        marks = [p.max_updated_at for p in pages if p.max_updated_at is not None]
        assert marks == sorted(marks)


def test_an_incremental_pull_reads_what_changed(source_rig: SourceRig) -> None:
    source = source_rig.source()
    watermarks = {}
    for stream in source_rig.hooks.streams:
        _, pages = source_rig.pulled(source, stream)
        watermarks[stream] = max(p.max_updated_at for p in pages if p.max_updated_at is not None)
    touched = source_rig.hooks.advance(source_rig.world)
    for stream in source_rig.hooks.streams:
        ids, _ = source_rig.pulled(source, stream, watermarks[stream])
        assert touched[stream] <= ids
        assert len(ids) < len(source_rig.hooks.expected_ids(source_rig.world, stream))


def test_a_throttled_source_waits_and_misses_nothing(source_rig: SourceRig) -> None:
    source = source_rig.source()
    source_rig.hooks.throttle(source_rig.world)
    stream = source_rig.hooks.streams[0]
    ids, _ = source_rig.pulled(source, stream)
    assert ids == source_rig.hooks.expected_ids(source_rig.world, stream)
    assert source_rig.waits and all(w > 0 for w in source_rig.waits)


def test_a_source_with_bad_credentials_needs_attention_and_never_shows_them(
    source_rig: SourceRig, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + source_rig.hooks.secret
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as info:
        source_rig.pulled(source_rig.source(secret=wrong), source_rig.hooks.streams[0])
    assert wrong not in str(info.value) + caplog.text


def test_a_source_under_5xx_and_resets_yields_the_same_records() -> None:
    for vendor in SOURCES:
        with SourceRig(vendor, faults=Faults(error_rate=0.15, reset_rate=0.05, seed=5)) as faulty:
            stream = faulty.hooks.streams[-1]
            ids, _ = faulty.pulled(faulty.source(), stream)
            assert ids == faulty.hooks.expected_ids(faulty.world, stream)
            assert any(r.status >= 500 for r in faulty.world.emulator.log)
