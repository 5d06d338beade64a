"""50,000 members through the real engine and store into each emulator, under 10% 5xx and a 429 storm.

Done-when of the destinations issue: the emulator's audience ends exactly equal to the desired
membership, every rejection is recorded with its reason, and no request exceeds the batch limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.kernel.destination import Destination
from connectors.kernel.emulator import EmulatorServer, Faults
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.runtime import Runtime
from connectors.mailchimp.destination import MailchimpConfig, MailchimpDestination
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.meta.destination import MetaConfig, MetaDestination
from connectors.meta.emulator import MetaEmulator
from tests.conftest import make_settings
from tests.helpers import write_config
from worker.config import load_config
from worker.cycle import sync_mapping
from worker.factory import make_runtime
from worker.store import Store, open_store

MEMBERS = 50_000


@dataclass
class Scenario:
    name: str
    emulator: EmulatorServer
    destination: Callable[[Runtime], Destination]
    config_body: str
    batch_limit: int
    members_now: Callable[[], set[str]]


def _mailchimp() -> Scenario:
    emulator = MailchimpEmulator(api_key="scale-key-us1", faults=Faults(error_rate=0.10, throttle_storm=10, seed=3))
    emulator.start()
    emulator.create_list("L1")

    def members_now() -> set[str]:
        segment = emulator.segment_by_name("L1", "vip")
        return set() if segment is None else emulator.segment_members("L1", segment)

    return Scenario(
        "mailchimp",
        emulator,
        lambda rt: MailchimpDestination(
            "mc",
            MailchimpConfig(base_url=emulator.url + "/3.0", secret="scale-key-us1"),
            rt,  # type: ignore[arg-type]
        ),
        '[destinations.mc]\ntype = "mailchimp"\n[[mappings]]\nname = "m"\nsegment = "buyers"\ndestination = "mc"\n'
        'audience = "L1"\noptions = { tag = "vip" }\n',
        500,
        members_now,
    )


def _meta() -> Scenario:
    emulator = MetaEmulator(access_token="scale-token", faults=Faults(error_rate=0.10, throttle_storm=10, seed=3))
    emulator.start()
    emulator.create_audience("A1")
    from connectors.meta.destination import encode_identity

    return Scenario(
        "meta",
        emulator,
        lambda rt: MetaDestination(
            "meta",
            MetaConfig(base_url=emulator.url + "/v25.0", secret="scale-token", requests_per_second=1000, burst=1000),  # type: ignore[arg-type]
            rt,
        ),
        '[destinations.meta]\ntype = "meta"\n[[mappings]]\nname = "m"\nsegment = "buyers"\ndestination = "meta"\n'
        'audience = "A1"\noptions = { keys = ["EMAIL"] }\n',
        10_000,
        lambda: {encode_identity([k for k, _ in row], tuple(v for _, v in row)) for row in emulator.audience("A1")},
    )


@pytest.fixture(params=["mailchimp", "meta"])
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    made = _mailchimp() if request.param == "mailchimp" else _meta()
    yield made
    made.emulator.stop()


def _seed(store: Store, keys: range, bad: set[int]) -> None:
    rows = [
        {
            "customer_key": f"k{n}",
            # the destination refuses these: Mailchimp's fake-address check, Meta's invalid hash
            "email": f"person{n}@example.invalid" if n in bad else f"person{n}@example.com",
            "phone": None,
            "first_name": None,
            "last_name": None,
            "country": None,
            "email_consent": "SUBSCRIBED",
        }
        for n in keys
    ]
    store.replace_profiles(rows)
    store.replace_segments({"buyers": [r["customer_key"] for r in rows]})


def test_fifty_thousand_members_converge_exactly_under_faults(scenario: Scenario, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    config = load_config(write_config(tmp_path / "c.toml", scenario.config_body))
    settings = make_settings()
    waits: list[float] = []
    runtime = make_runtime(settings, sleep=waits.append, key_prefix=f"scale-{uuid.uuid4().hex[:6]}")
    runtime.retry_attempts = 12
    runtime.retry_max_seconds = 3600  # Meta asks for 60 s per throttle; the budget is a setting
    bad = set(range(0, MEMBERS, 997))  # 51 members the destination will refuse
    if isinstance(scenario.emulator, MetaEmulator):
        scenario.emulator.poisoned.update(sha256_hex(f"person{n}@example.invalid") for n in bad)
    _seed(store, range(MEMBERS), bad)

    def run() -> Any:
        destination = scenario.destination(runtime)
        try:
            return sync_mapping(store, config, settings, runtime, "m", destination=destination)
        finally:
            destination.close()

    first = run()
    assert first.status == "partial" and first.rejected == len(bad)
    rejected = store.rejected("m")
    assert len(rejected) == len(bad) and all(r["reason"] for r in rejected.values())
    assert scenario.members_now() == set(store.acknowledged("m"))
    assert len(store.acknowledged("m")) == MEMBERS - len(bad)
    assert waits, "the injected faults must have caused retries"

    # a following diff sync: 5,000 leave, 5,000 join, under the same faults; first a throttle
    # storm longer than the retry budget: the run fails visibly, and the next one converges
    _seed(store, range(5_000, MEMBERS + 5_000), bad)
    scenario.emulator.faults.throttle_storm = 40
    stormed = run()
    assert stormed.status == "failed" and stormed.error
    assert store.recent_runs(mapping="m")[0].status == "failed"
    scenario.emulator.faults.throttle_storm = 10
    second = run()
    assert second.status == "ok"
    assert stormed.added + second.added == 5_000
    assert stormed.removed + second.removed == 5_000 - len([n for n in bad if n < 5_000])
    desired = {m for m in set(store.acknowledged("m"))}
    assert scenario.members_now() == desired
    assert len(desired) == MEMBERS - len([n for n in bad if n >= 5_000])

    sizes = [r.items for r in scenario.emulator.log if r.items is not None]
    assert sizes and max(sizes) <= scenario.batch_limit
    store.dispose()
