"""Faults injected at the point where they used to leave an audience wrong or a run silently lost.

Each test injects exactly one fault (a worker killed after the destination applied a batch, the
database's connections cut, a torn answer to a creation, odd records on PostgreSQL) and asserts what
a person would check: the destination's real audience equals the desired membership, and the run
rows say what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from connectors.kernel.emulator import Faults, Request, Scripted
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.meta.destination import encode_identity
from connectors.meta.emulator import MetaEmulator
from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
from connectors.shopify.synthetic import SyntheticStore
from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from worker.config import AppConfig, load_config
from worker.cycle import pull, sync_mapping
from worker.factory import build_destination, make_runtime
from worker.settings import Settings
from worker.store import Store, open_store
from worker.sync import desired_identities

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Rig:
    """One mapping ``big`` of the ``buyers`` segment into a live destination emulator."""

    platform: str
    emulator: MailchimpEmulator | MetaEmulator
    config: AppConfig
    config_path: Path
    settings: Settings
    env: dict[str, str]
    #: the add request that carries a batch (the one a kill is aimed at)
    batch_path: str

    def audience(self) -> set[str]:
        if isinstance(self.emulator, MailchimpEmulator):
            segment = self.emulator.segment_by_name("L1", "vip")
            return set() if segment is None else self.emulator.segment_members("L1", segment)
        return {encode_identity([k for k, _ in r], tuple(v for _, v in r)) for r in self.emulator.audience("L1")}

    def identities(self, store: Store) -> dict[str, str]:
        """Identity → customer key of everyone eligible in the segment now."""
        destination = build_destination("d", self.config.destinations["d"], self.settings, make_runtime(self.settings))
        members = store.members(store.segment_keys("buyers")).values()
        return {i: m.key for i, m in desired_identities(destination, members, self.config.options["big"])[0].items()}

    def desired(self, store: Store) -> set[str]:
        return set(self.identities(store))

    def leave(self, store: Store, keys: list[str], identities: set[str]) -> None:
        """The people behind ``identities`` leave the segment (consent withdrawn, aged out)."""
        by_identity = self.identities(store)
        gone = {by_identity[i] for i in identities}
        store.replace_segments({"buyers": [k for k in keys if k not in gone]})

    def sync(self, store: Store, **kwargs: Any) -> Any:
        return sync_mapping(store, self.config, self.settings, make_runtime(self.settings), "big", **kwargs)


@pytest.fixture(params=["mailchimp", "meta"])
def rig(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[Rig]:
    platform = request.param
    emulator: MailchimpEmulator | MetaEmulator
    if platform == "mailchimp":
        emulator = MailchimpEmulator(api_key="fault-key-us1")
        emulator.create_list("L1")
        secret = {"AUDIENCE_SYNC_MAILCHIMP_API_KEY": "fault-key-us1"}
        body, options, batch = (
            'type = "mailchimp"\nbase_url = "URL/3.0"',
            'options = { tag = "vip" }',
            r"/lists/L1/segments/\d+$",
        )
    else:
        emulator = MetaEmulator(access_token="fault-token")
        emulator.create_audience("L1")
        secret = {"AUDIENCE_SYNC_META_ACCESS_TOKEN": "fault-token"}
        body, options, batch = 'type = "meta"\nbase_url = "URL/v25.0"', 'options = { keys = ["EMAIL"] }', r"/L1/users$"
    with emulator:
        path = write_config(
            tmp_path / "faults.toml",
            f"[destinations.d]\n{body.replace('URL', emulator.url)}\n"
            f'[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "d"\naudience = "L1"\n{options}\n',
        )
        settings = make_settings(
            database_url=database_url,
            config=path,
            secrets=secret,
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AUDIENCE_SYNC_DATABASE_URL": database_url,
            "AUDIENCE_SYNC_CONFIG": str(path),
            **secret,
        }
        yield Rig(platform, emulator, load_config(path), path, settings, env, batch)


def _kill_after_apply(rig: Rig, after: int) -> subprocess.Popen[bytes]:
    """Start ``resync big --inline`` in its own process; SIGKILL it once the destination has applied
    batch ``after + 1`` and before the answer reaches it (applied, never recorded)."""
    child: list[subprocess.Popen[bytes]] = []

    def kill(_: Request) -> None:
        os.kill(child[0].pid, signal.SIGKILL)
        child[0].wait(10)

    rig.emulator.faults = Faults(script=[Scripted("POST", rig.batch_path, "hook", hook=kill, after=after)])
    child.append(
        subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "resync", "big", "--inline"],
            env=rig.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    child[0].wait(120)
    return child[0]


def test_a_batch_applied_but_never_recorded_is_removed_when_its_members_leave(rig: Rig) -> None:
    store = open_store(rig.settings.database_url)
    size = 1_200 if rig.platform == "mailchimp" else 12_000  # three Mailchimp batches, two Meta ones
    keys = seed_segment(store, "buyers", size)
    killed = _kill_after_apply(rig, after=1 if rig.platform == "mailchimp" else 0)
    assert killed.returncode == -signal.SIGKILL

    held, acknowledged = rig.audience(), set(store.acknowledged("big"))
    unrecorded = held - acknowledged
    assert unrecorded, "the kill must land after the destination applied a batch"
    assert store.recent_runs(mapping="big")[0].status == "running"  # the killed run, still open

    # the people of the unrecorded batch leave the segment before the next sync
    rig.leave(store, keys, unrecorded)

    result = rig.sync(store)
    assert result.status == "ok", result.error
    assert rig.audience() == rig.desired(store) == set(store.acknowledged("big"))  # nothing extra, nothing missing
    assert result.removed >= len(unrecorded)
    statuses = [r.status for r in store.recent_runs(mapping="big")]
    assert statuses[:2] == ["ok", "interrupted"]  # the killed run is closed as what it was
    store.dispose()


class DatabaseCut:
    """Cut every connection to the test database and refuse new ones until :meth:`restore`
    (a pool's pre-ping would quietly heal a cut alone; this is the database going away)."""

    def __init__(self, url: str) -> None:
        self.name = make_url(url).database
        self.admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")

    def __call__(self, _: Request | None = None) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": self.name}
            )

    def restore(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))
        self.admin.dispose()


def test_a_database_cut_after_the_destination_applied_a_batch_fails_the_run_and_the_next_converges(
    rig: Rig,
) -> None:
    if not rig.settings.database_url.startswith("postgresql"):
        pytest.skip("cutting the database's connections needs PostgreSQL")
    store = open_store(rig.settings.database_url)
    keys = seed_segment(store, "buyers", 1_200 if rig.platform == "mailchimp" else 12_000)
    cut = DatabaseCut(rig.settings.database_url)
    rig.emulator.faults = Faults(script=[Scripted("POST", rig.batch_path, "hook", hook=cut)])
    try:
        with pytest.raises(OperationalError) as failed:
            rig.sync(store)
    finally:
        cut.restore()
    assert "@" not in str(failed.value) and "member" not in str(failed.value)  # never SQL parameters
    assert store.recent_runs(mapping="big")[0].status == "running"  # could not even be closed

    unrecorded = rig.audience() - set(store.acknowledged("big"))
    assert unrecorded
    rig.leave(store, keys, unrecorded)
    assert rig.sync(store).status == "ok"
    assert rig.audience() == rig.desired(store) == set(store.acknowledged("big"))
    assert [r.status for r in store.recent_runs(mapping="big")][:2] == ["ok", "interrupted"]
    # what the failure left in run rows and in `status --json`: no address, no SQL parameters
    from worker.status import status_report

    assert all("@" not in (r.error or "") for r in store.recent_runs(mapping="big"))
    assert "@" not in json.dumps(status_report(store), default=str)
    store.dispose()


def test_a_full_resync_without_native_replace_removes_what_may_be_held(rig: Rig) -> None:
    if rig.platform != "mailchimp":
        pytest.skip("Meta replaces natively")
    store = open_store(rig.settings.database_url)
    keys = seed_segment(store, "buyers", 1_200)
    _kill_after_apply(rig, after=1)
    rig.leave(store, keys, rig.audience() - set(store.acknowledged("big")))
    assert rig.sync(store, full=True).status == "ok"
    assert rig.audience() == rig.desired(store)
    store.dispose()


def test_a_torn_answer_to_the_tag_creation_never_makes_a_second_segment(database_url: str, tmp_path: Path) -> None:
    with MailchimpEmulator(api_key="torn-key-us1") as emulator:
        emulator.create_list("L1")
        emulator.faults = Faults(script=[Scripted("POST", r"/lists/L1/segments$", "torn")])
        path = write_config(
            tmp_path / "torn.toml",
            f'[destinations.d]\ntype = "mailchimp"\nbase_url = "{emulator.url}/3.0"\n'
            '[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "d"\naudience = "L1"\n'
            'options = { tag = "vip" }\n',
        )
        settings = make_settings(
            database_url=database_url, config=path, secrets={"AUDIENCE_SYNC_MAILCHIMP_API_KEY": "torn-key-us1"}
        )
        config = load_config(path)
        store = open_store(database_url)
        seed_segment(store, "buyers", 30)
        first = sync_mapping(store, config, settings, make_runtime(settings), "big")
        assert first.status == "ok" and first.added == 30
        assert [name for name, _ in emulator.segments["L1"].values()] == ["vip"]  # one segment, not two
        segment = emulator.segment_by_name("L1", "vip")
        assert store.remembered("big") == {"segment:L1:vip": segment}
        looked_up = sum(1 for r in emulator.log if r.method == "GET" and r.path.endswith("/segments"))
        seed_segment(store, "buyers", 40)
        assert sync_mapping(store, config, settings, make_runtime(settings), "big").added == 10
        assert sum(1 for r in emulator.log if r.method == "GET" and r.path.endswith("/segments")) == looked_up
        store.dispose()


def test_a_missing_list_says_what_to_check(database_url: str, tmp_path: Path) -> None:
    with MailchimpEmulator(api_key="nolist-key-us1") as emulator:
        path = write_config(
            tmp_path / "nolist.toml",
            f'[destinations.d]\ntype = "mailchimp"\nbase_url = "{emulator.url}/3.0"\n'
            '[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "d"\naudience = "nope"\n'
            'options = { tag = "vip" }\n',
        )
        settings = make_settings(
            database_url=database_url, config=path, secrets={"AUDIENCE_SYNC_MAILCHIMP_API_KEY": "nolist-key-us1"}
        )
        store = open_store(database_url)
        seed_segment(store, "buyers", 3)
        result = sync_mapping(store, load_config(path), settings, make_runtime(settings), "big")
        assert result.status == "needs_attention"
        assert result.error is not None and "(HTTP 404, Resource Not Found)" in result.error
        assert "check the mapping's audience" in result.error
        store.dispose()


def test_odd_records_are_fitted_or_refused_and_never_block_ingestion(database_url: str, tmp_path: Path) -> None:
    """On PostgreSQL above all: lengths, NUL bytes and lone surrogates used to stop the pull for good."""
    now = datetime(2026, 5, 1, tzinfo=UTC)
    shop = SyntheticStore(seed=21, customers=60, now=now)
    named = [c for c in shop.customers if c["firstName"]][:3]
    named[0]["firstName"] = "N" * 5_000
    named[1]["lastName"] = "nul\x00byte"
    named[2]["firstName"] = "lone \udcff surrogate"
    orders = [o for o in shop.orders if o["customer"] is not None and o["customerJourneySummary"]][:3]
    orders[0]["lineItems"]["nodes"][0]["sku"] = "S" * 1_000
    orders[1]["customerJourneySummary"]["firstVisit"]["utmParameters"] = {"source": "u" * 300, "medium": "cpc"}
    orders[2]["id"] = "gid://shopify/Order/" + "9" * 300  # an id no column can hold
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        emulator.faults = Faults(script=[Scripted("POST", r"graphql", "invalid_utf8", after=1)])
        # paged, not bulk: the fault is a page's bytes (the bulk path's odd records: tests/test_backfill.py)
        path = write_config(tmp_path / "odd.toml", "", shop_url=emulator.url, source_options="bulk_backfill = false")
        settings = make_settings(
            database_url=database_url, config=path, secrets={"AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": DEFAULT_TOKEN}
        )
        store = open_store(database_url)
        result = pull(store, load_config(path), settings, make_runtime(settings, sleep=lambda s: None), now=now)
        assert result.status == "partial", result.error
        problems = dict(store.problems(result.run_id or 0))
        assert problems[orders[2]["id"][:200]].startswith("order_id cannot be stored (320 characters")
        warnings = [reason for reason in problems.values() if reason.startswith("warning:")]
        assert any("first_name: truncated from 5,000 to 128" in w for w in warnings)
        assert any("NUL bytes removed" in w for w in warnings)
        assert any("not valid Unicode replaced" in w for w in warnings)
        assert any("sku: truncated from 1,000 to 128" in w for w in warnings)
        assert any("channel: truncated" in w for w in warnings)
        assert any("not UTF-8" in reason for reason in problems.values())  # reported as what it is
        counts = store.counts()
        assert counts["customers"] == len(shop.customers)
        assert counts["orders"] == len(shop.orders) - 1  # only the order with the impossible id is missing
        assert store.get_watermark("shopify", "orders") is not None
        again = pull(store, load_config(path), settings, make_runtime(settings, sleep=lambda s: None), now=now)
        assert again.status in ("ok", "partial") and store.counts() == counts  # the next cycle is not stuck
        store.dispose()


def test_a_database_cut_during_a_pull_fails_the_run_visibly_and_keeps_the_watermark(
    database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("cutting the database's connections needs PostgreSQL")
    now = datetime(2026, 5, 1, tzinfo=UTC)
    shop = SyntheticStore(seed=22, customers=300, now=now)
    with ShopifyEmulator(shop, restore_rate=10_000, bucket_size=20_000) as emulator:
        cut = DatabaseCut(database_url)
        emulator.faults = Faults(script=[Scripted("POST", r"graphql", "hook", hook=cut, after=3)])
        path = write_config(tmp_path / "cut.toml", "", shop_url=emulator.url)
        settings = make_settings(
            database_url=database_url, config=path, secrets={"AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": DEFAULT_TOKEN}
        )
        store = open_store(database_url)
        runtime = make_runtime(settings, sleep=lambda s: None)
        try:
            result = pull(store, load_config(path), settings, runtime, now=now)
        finally:
            cut.restore()
        assert result.status == "failed" and result.error is not None and "OperationalError" in result.error
        assert "@" not in result.error
        assert store.run(result.run_id or 0).status == "running"  # the database was gone: not even "ok"
        assert store.counts()["orders"] < len(shop.orders)
        again = pull(store, load_config(path), settings, runtime, now=now)
        assert again.status == "ok"
        assert store.counts() == {"orders": len(shop.orders), "customers": len(shop.customers)}
        assert store.recent_runs()[1].status == "interrupted"
        store.dispose()


def test_a_full_resync_of_an_empty_segment_is_a_plain_removal_not_a_failure(rig: Rig) -> None:
    store = open_store(rig.settings.database_url)
    keys = seed_segment(store, "buyers", 20)
    assert rig.sync(store).added == 20
    store.replace_segments({"buyers": []})
    emptied = rig.sync(store, full=True)
    assert (emptied.status, emptied.removed) == ("ok", 20) and rig.audience() == set()
    nothing = rig.sync(store, full=True)
    assert (nothing.status, nothing.added, nothing.removed) == ("ok", 0, 0)
    assert keys
    store.dispose()
