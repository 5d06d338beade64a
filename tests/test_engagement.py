"""Opens and clicks from Mailchimp make a lapsed buyer "engaged in the last 30 days"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.shopify.synthetic import SyntheticStore
from tests.conftest import make_settings
from tests.test_cycle_e2e import _sandbox_config
from worker.runner import run_cycle
from worker.sandbox import Sandbox
from worker.store import open_store

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_an_open_brings_a_lapsed_subscriber_into_engaged_30d_and_is_read_once(sqlite_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=8, customers=200, now=NOW)
    settings = make_settings(database_url=sqlite_url)
    with Sandbox(NOW, store=shop) as sandbox:
        config, resolved = sandbox.resolve(_sandbox_config(tmp_path), settings)
        assert config.engagement == ["mailchimp"]
        store = open_store(sqlite_url)
        run_cycle(store, config, resolved, now=NOW)
        lapsed = store.members(store.segment_keys("lapsed_60_180"))
        person = next(m for _, m in sorted(lapsed.items()) if m.email and m.email_consent == "SUBSCRIBED")
        assert person.key not in store.segment_keys("engaged_30d")

        mailchimp = sandbox.emulator("mailchimp")
        assert isinstance(mailchimp, MailchimpEmulator)
        mailchimp.send_campaign("c-1", "sandbox-list", NOW - timedelta(days=3))
        assert person.email is not None
        mailchimp.record_activity("c-1", person.email, "bounce", NOW - timedelta(days=3))
        mailchimp.record_activity("c-1", person.email.upper(), "open", NOW - timedelta(days=2))
        later = NOW + timedelta(hours=1)
        report = run_cycle(store, config, resolved, now=later)

        assert report.pull.engagement == 1
        assert person.key in store.segment_keys("engaged_30d")
        assert person.key not in store.segment_keys("lapsed_60_180")  # lapsed excludes engaged
        assert report.syncs["engaged-30d-file"].added >= 1

        again = run_cycle(store, config, resolved, now=later + timedelta(hours=1))
        assert again.pull.engagement == 0  # the watermark moved: the same open is not re-applied
        since = [r for r in mailchimp.log if r.path.endswith("/email-activity")]
        assert since, "the activity endpoint was read"
        store.dispose()
