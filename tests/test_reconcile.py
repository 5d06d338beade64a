"""Drift made by hand at a platform is found and repaired; the dry run shows the next sync exactly;
members whose platform membership would expire are re-sent in time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from connectors.file.destination import FileDestination, audience_path, read_audience, write_audience
from connectors.kernel.identifiers import sha256_hex
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.meta.emulator import MetaEmulator
from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from worker.config import load_config
from worker.cycle import sync_mapping, utc_now
from worker.dryrun import dry_run, render_dry_run
from worker.factory import make_runtime
from worker.reconcile import reconcile
from worker.store import open_store


def test_file_drift_is_found_and_repaired(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        f'[destinations.f]\ntype = "file"\ndirectory = "{tmp_path / "aud"}"\n'
        '[[mappings]]\nname = "m"\nsegment = "buyers"\ndestination = "f"\naudience = "a"\n',
    )
    config, settings = load_config(path), make_settings()
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    keys = seed_segment(store, "buyers", 10)
    sync_mapping(store, config, settings, make_runtime(settings), "m")
    file = audience_path(tmp_path / "aud", "a")
    held = sorted(read_audience(file))
    write_audience(file, "email_sha256", [*held[2:], sha256_hex("stranger@example.com")])  # by hand

    drift = reconcile(store, config, settings, make_runtime(settings), "m")
    assert (len(drift.missing), len(drift.extra)) == (2, 1)
    assert "2 missing at the destination, 1 extra" in drift.render()
    repaired = reconcile(store, config, settings, make_runtime(settings), "m", repair=True)
    assert repaired.after is not None and not repaired.after.missing and not repaired.after.extra
    assert read_audience(file) == {sha256_hex(f"member{k[1:]}@example.com") for k in keys}
    store.dispose()


def test_mailchimp_drift_is_found_and_repaired_and_meta_says_it_cannot_tell(tmp_path: Path) -> None:
    with MailchimpEmulator(api_key="drift-key-us1") as mailchimp, MetaEmulator(access_token="drift") as meta:
        mailchimp.create_list("L1")
        meta.create_audience("A1")
        path = write_config(
            tmp_path / "c.toml",
            f'[destinations.mc]\ntype = "mailchimp"\nbase_url = "{mailchimp.url}/3.0"\n'
            f'[destinations.fb]\ntype = "meta"\nbase_url = "{meta.url}/v25.0"\n'
            '[[mappings]]\nname = "m"\nsegment = "buyers"\ndestination = "mc"\naudience = "L1"\n'
            'options = { tag = "vip" }\n'
            '[[mappings]]\nname = "ads"\nsegment = "buyers"\ndestination = "fb"\naudience = "A1"\n',
        )
        settings = make_settings(
            secrets={"AUDIENCE_SYNC_MAILCHIMP_API_KEY": "drift-key-us1", "AUDIENCE_SYNC_META_ACCESS_TOKEN": "drift"}
        )
        config = load_config(path)
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        seed_segment(store, "buyers", 10)
        sync_mapping(store, config, settings, make_runtime(settings), "m")
        segment = mailchimp.segment_by_name("L1", "vip")
        assert segment is not None
        members = mailchimp.segments["L1"][segment][1]
        members.discard("member0@example.com")  # a marketer removed two by hand ...
        members.discard("member1@example.com")
        mailchimp.add_member("L1", "stranger@example.com")  # ... and added someone we never chose
        members.add("stranger@example.com")

        drift = reconcile(store, config, settings, make_runtime(settings), "m", repair=True)
        assert drift.missing == {"member0@example.com", "member1@example.com"}
        assert drift.extra == {"stranger@example.com"}
        assert "s***@example.com" in drift.render() and "stranger@" not in drift.render()
        assert drift.after is not None and not drift.after.missing and not drift.after.extra
        assert mailchimp.segment_members("L1", segment) == {f"member{n}@example.com" for n in range(10)}

        meta_check = reconcile(store, config, settings, make_runtime(settings), "ads")
        assert not meta_check.readable and "cannot list an audience's members" in meta_check.render()
        store.dispose()


def test_the_dry_run_is_exactly_the_next_sync_and_sends_nothing(tmp_path: Path) -> None:
    with MailchimpEmulator(api_key="dry-key-us1") as mailchimp:
        mailchimp.create_list("L1")
        path = write_config(
            tmp_path / "c.toml",
            f'[destinations.mc]\ntype = "mailchimp"\nbase_url = "{mailchimp.url}/3.0"\n'
            '[[mappings]]\nname = "m"\nsegment = "buyers"\ndestination = "mc"\naudience = "L1"\n'
            'options = { tag = "vip" }\n',
        )
        settings = make_settings(secrets={"AUDIENCE_SYNC_MAILCHIMP_API_KEY": "dry-key-us1"})
        config = load_config(path)
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        seed_segment(store, "buyers", 8)
        sync_mapping(store, config, settings, make_runtime(settings), "m")
        seed_segment(store, "buyers", 8, start=3)  # three leave, three join
        sent = len(mailchimp.log)
        report = dry_run(store, config, settings, make_runtime(settings), "m")
        assert len(mailchimp.log) == sent  # nothing sent
        assert (report["adds"], report["removes"]) == (3, 3)
        text = render_dry_run(report)
        assert "would add 3 and remove 3" in text and "member" not in text.replace("m***@", "")
        result = sync_mapping(store, config, settings, make_runtime(settings), "m")
        assert (result.added, result.removed) == (report["adds"], report["removes"])
        store.dispose()


def test_members_are_re_sent_before_the_platform_lets_them_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FileDestination, "membership_ttl_days", 540)
    path = write_config(
        tmp_path / "c.toml",
        f'[destinations.f]\ntype = "file"\ndirectory = "{tmp_path / "aud"}"\n'
        '[[mappings]]\nname = "m"\nsegment = "buyers"\ndestination = "f"\naudience = "a"\n',
    )
    config, settings = load_config(path), make_settings()
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    seed_segment(store, "buyers", 6)
    sync_mapping(store, config, settings, make_runtime(settings), "m")
    soon = sync_mapping(store, config, settings, make_runtime(settings), "m", now=utc_now() + timedelta(days=400))
    assert soon.refreshed == 0
    late = sync_mapping(store, config, settings, make_runtime(settings), "m", now=utc_now() + timedelta(days=515))
    assert late.refreshed == 6 and late.added == 6  # 30 days before day 540, everyone is sent again
    again = sync_mapping(store, config, settings, make_runtime(settings), "m", now=utc_now() + timedelta(days=515))
    assert again.refreshed == 0  # their clock restarted
    store.dispose()
