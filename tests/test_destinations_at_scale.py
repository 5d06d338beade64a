"""50,000 members through the real engine and store into every registered destination's emulator,
under 10% 5xx and throttle storms: the audience ends exactly equal to the desired membership, every
rejection is recorded with its reason, and no request exceeds the platform's limit.

Generated over the vendors' contract hooks: a new destination gets this run by registering.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.kernel.contract import DestinationHooks
from connectors.kernel.emulator import EmulatorServer, Faults
from connectors.kernel.vendor import destination_class, vendors
from tests.conftest import make_settings
from tests.test_contracts import DESTINATIONS
from worker.config import AppConfig, parse_config
from worker.cycle import sync_mapping
from worker.factory import make_runtime
from worker.store import Store, open_store

MEMBERS = 50_000
WITH_EMULATOR = [v for v in DESTINATIONS if vendors()[v].part("contract")().make_emulator() is not None]


@pytest.fixture(params=WITH_EMULATOR)
def platform(request: pytest.FixtureRequest) -> Iterator[tuple[str, DestinationHooks, EmulatorServer]]:
    hooks: DestinationHooks = vendors()[request.param].part("contract")()
    emulator = hooks.make_emulator()
    assert emulator is not None
    emulator.faults = Faults(error_rate=0.10, throttle_storm=10, seed=3)
    emulator.start()
    hooks.prepare(emulator)
    yield request.param, hooks, emulator
    emulator.stop()


def _config(vendor: str, hooks: DestinationHooks, emulator: Any, workdir: Path) -> AppConfig:
    options = hooks.options().model_dump(mode="json", exclude_defaults=True)
    table = hooks.make_config(emulator, hooks.secret, workdir).model_dump(mode="json", exclude={"secret"})
    return parse_config(
        {
            "source": {"type": "shopify", "shop_url": "https://example.myshopify.com"},
            "destinations": {"d": table},
            "mappings": [
                {"name": "m", "segment": "buyers", "destination": "d", "audience": hooks.audience, "options": options}
            ],
        },
        Path("scale.toml"),
    )


def _seed(store: Store, hooks: DestinationHooks, emulator: Any, keys: range, bad: set[int]) -> None:
    members = [hooks.refusing(emulator, hooks.member(n)) if n in bad else hooks.member(n) for n in keys]
    store.replace_profiles(
        [
            {
                "customer_key": m.key,
                "email": m.email,
                "phone": m.phone,
                "first_name": m.first_name,
                "last_name": m.last_name,
                "country": m.country,
                "email_consent": m.email_consent.value,
            }
            for m in members
        ]
    )
    store.replace_segments({"buyers": [m.key for m in members]})


def test_fifty_thousand_members_converge_exactly_under_faults(
    platform: tuple[str, DestinationHooks, EmulatorServer], tmp_path: Path
) -> None:
    vendor, hooks, emulator = platform
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    config = _config(vendor, hooks, emulator, tmp_path)
    settings = make_settings()
    waits: list[float] = []
    runtime = make_runtime(settings, sleep=waits.append, key_prefix=f"scale-{uuid.uuid4().hex[:6]}")
    runtime.retry_attempts = 12
    runtime.retry_max_seconds = 3600  # Meta asks for 60 s per throttle; the budget is a setting
    bad = set(range(0, MEMBERS, 997)) if hooks.refuses_members else set()  # 51 members refused
    _seed(store, hooks, emulator, range(MEMBERS), bad)
    held = lambda: hooks.members_in(emulator, hooks.audience, hooks.options(), tmp_path)  # noqa: E731

    def run() -> Any:
        destination = destination_class(vendor)("d", hooks.make_config(emulator, hooks.secret, tmp_path), runtime)
        try:
            return sync_mapping(store, config, settings, runtime, "m", destination=destination)
        finally:
            destination.close()

    first = run()
    assert first.status == ("partial" if bad else "ok"), first.error
    assert first.rejected == len(bad)
    rejected = store.rejected("m")
    assert len(rejected) == len(bad) and all(r["reason"] for r in rejected.values())
    assert held() == set(store.acknowledged("m"))
    assert len(store.acknowledged("m")) == MEMBERS - len(bad)
    assert waits, "the injected faults must have caused retries"

    # a following diff sync: 5,000 leave, 5,000 join, under the same faults; first a throttle
    # storm longer than the retry budget: the run fails visibly, and the next one converges
    _seed(store, hooks, emulator, range(5_000, MEMBERS + 5_000), bad)
    emulator.faults.throttle_storm = 40
    stormed = run()
    assert stormed.status == "failed" and stormed.error
    assert store.recent_runs(mapping="m")[0].status == "failed"
    emulator.faults.throttle_storm = 10
    second = run()
    assert second.status == "ok", second.error
    assert stormed.added + second.added == 5_000
    assert stormed.removed + second.removed == 5_000 - len([n for n in bad if n < 5_000])
    assert held() == set(store.acknowledged("m"))
    assert len(held()) == MEMBERS - len([n for n in bad if n >= 5_000])

    sizes = [r.items for r in emulator.log if r.items is not None]
    assert sizes and max(sizes) <= hooks.request_limit
    store.dispose()
