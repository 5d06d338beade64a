"""The issue, end to end: "A marketer can add a segment in the config file without touching code,
preview it, map it to a destination, and see it synced by the next cycle."

Only the config file and the ``preview`` command are touched by the "marketer"; the cycles run
in-process against the sandbox (a small synthetic Shopify store behind the emulator, the Mailchimp and
Meta emulators, file destinations in ``tmp_path``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from click.testing import CliRunner, Result

from connectors.file.destination import audience_path, read_audience
from connectors.shopify.synthetic import SyntheticStore
from tests.conftest import make_settings
from worker import cli
from worker.config import DEFAULT_CONFIG, AppConfig, load_config
from worker.preview import preview_dict
from worker.runner import CycleReport, run_cycle
from worker.sandbox import Sandbox
from worker.segments import build_customer_table
from worker.settings import get_settings
from worker.store import Store, open_store

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=7)

NEW_SEGMENT = """
[segments.definitions.big_spenders_90d]
description = "Spent at least 500 in all and ordered in the last 90 days"
all = [{ revenue = { min = 500 } }, { last_order_days = { max = 89 } }]

[[mappings]]
name = "big-spenders-90d-file"
segment = "big_spenders_90d"
destination = "newsletter_file"
audience = "big_spenders_90d"
"""


def _shipped_config(audiences: Path) -> str:
    """The shipped sandbox config with its audience files moved under the test's directory."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert text.count('directory = "var/audiences"') == 2
    return text.replace('directory = "var/audiences"', f"directory = {json.dumps(str(audiences))}")


def _preview(*args: str, config: Path, database_url: str) -> Result:
    """``audience-sync preview ARGS`` with the config and database named by the environment.

    The command runs in-process (a subprocess costs seconds of imports); the group's logging setup is
    skipped so the session-wide log scan keeps seeing unredacted lines.
    """
    env = {"AUDIENCE_SYNC_CONFIG": str(config), "AUDIENCE_SYNC_DATABASE_URL": database_url}
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli.preview, list(args), env=env)
    finally:
        get_settings.cache_clear()


def _cycle(
    store: Store, sandbox: Sandbox, config_path: Path, database_url: str, now: datetime
) -> tuple[AppConfig, CycleReport]:
    config, resolved = sandbox.resolve(load_config(config_path), make_settings(database_url=database_url))
    return config, run_cycle(store, config, resolved, now=now)


def _big_spenders_by_hand(store: Store, now: datetime) -> set[str]:
    """The rule evaluated on the customer table with plain pandas (not the condition engine)."""
    frame = build_customer_table(store.orders_frame(), store.customers_frame(), store.lines_frame()).frame
    last_day = frame["last_order_at"].dt.tz_convert("UTC").dt.floor("D")
    age = (pd.Timestamp(now.date(), tz="UTC") - last_day).dt.days  # NaN without orders: never <= 89
    hit = (frame["revenue"] >= 500) & (age <= 89)
    return set(frame.index[hit.to_numpy(dtype=bool)])


def test_add_preview_map_and_sync_a_segment_from_the_config_file(sqlite_url: str, tmp_path: Path) -> None:
    audiences = tmp_path / "audiences"
    config_path = tmp_path / "audience-sync.toml"
    config_path.write_text(_shipped_config(audiences), encoding="utf-8")
    shop = SyntheticStore(seed=7, customers=200, now=NOW)
    store = open_store(sqlite_url)
    try:
        with Sandbox(NOW, store=shop) as sandbox:
            _, first = _cycle(store, sandbox, config_path, sqlite_url, NOW)
            assert "big_spenders_90d" not in first.recompute.sizes

            # the marketer edits the file: a new segment and a mapping for it
            config_path.write_text(config_path.read_text(encoding="utf-8") + NEW_SEGMENT, encoding="utf-8")

            # ... previews it before the next run
            shown = _preview("--now", LATER.isoformat(), config=config_path, database_url=sqlite_url)
            assert shown.exit_code == 0, shown.output
            row = next(line for line in shown.stdout.splitlines() if line.startswith("big_spenders_90d "))
            expected = _big_spenders_by_hand(store, LATER)
            assert 0 < len(expected) < 200
            size, change = row.split()[1:3]
            assert (int(size.replace(",", "")), change) == (len(expected), "new")
            mapping_row = next(line for line in shown.stdout.splitlines() if "big-spenders-90d-file" in line)
            assert mapping_row.split()[:2] == ["big-spenders-90d-file", "big_spenders_90d"]
            assert "email list" in mapping_row
            assert "@" not in shown.stdout.replace("***@", "")  # samples are masked

            # the same data as JSON (what the control API will serve)
            data = json.loads(
                json.dumps(preview_dict(make_settings(database_url=sqlite_url, config=config_path), LATER))
            )
            entry = next(s for s in data["segments"] if s["name"] == "big_spenders_90d")
            assert entry["size"] == len(expected) and entry["previous_size"] is None
            assert entry["description"] == "Spent at least 500 in all and ordered in the last 90 days"
            (target,) = entry["mappings"]
            assert (target["mapping"], target["audience_kind"]) == ("big-spenders-90d-file", "email")

            # ... and the next cycle syncs it
            config, later = _cycle(store, sandbox, config_path, sqlite_url, LATER)
            assert later.recompute.sizes["big_spenders_90d"] == len(expected)
            assert store.segment_keys("big_spenders_90d") == expected
            result = later.syncs["big-spenders-90d-file"]
            assert result.status == "ok"
            eligible = {
                m.email for m in store.members(expected).values() if m.email and m.email_consent == "SUBSCRIBED"
            }
            assert eligible and result.eligible == target["eligible"] == len(eligible)
            assert read_audience(audience_path(audiences, "big_spenders_90d")) == eligible
            assert config.mappings["big-spenders-90d-file"].segment == "big_spenders_90d"
    finally:
        store.dispose()


def test_a_bad_definition_stops_the_cli_naming_segment_key_and_what_is_allowed(sqlite_url: str, tmp_path: Path) -> None:
    config_path = tmp_path / "audience-sync.toml"
    base = _shipped_config(tmp_path / "audiences")
    config_path.write_text(base + NEW_SEGMENT.replace("{ max = 89 }", "{ max = 89, within = 3 }"), encoding="utf-8")
    shown = _preview(config=config_path, database_url=sqlite_url)
    assert shown.exit_code == 2
    message = shown.stderr
    assert str(config_path) in message
    assert "segment 'big_spenders_90d'" in message
    assert "rule.all[1].last_order_days.within" in message and "unknown key 'within'" in message
    assert "allowed: min, max" in message
    assert "Traceback" not in message

    config_path.write_text(base + NEW_SEGMENT.replace("revenue =", "spend ="), encoding="utf-8")
    shown = _preview(config=config_path, database_url=sqlite_url)
    assert shown.exit_code == 2
    assert "segment 'big_spenders_90d'" in shown.stderr
    assert "unknown condition 'spend'" in shown.stderr
    assert "allowed: all, any, not, segment, last_order_days" in shown.stderr
