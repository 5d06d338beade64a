"""A whole in-process cycle: Shopify emulator → store → segments → file audiences, with bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.destinations.file import audience_path, read_audience
from connectors.emulators.synthetic import SyntheticStore
from connectors.identifiers import sha256_hex
from tests.conftest import make_settings
from tests.helpers import audience_now
from worker.config import load_config
from worker.factory import build_destination, make_runtime
from worker.runner import run_cycle
from worker.sandbox import Sandbox
from worker.status import render_status, status_rows
from worker.store import open_store

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _sandbox_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = load_config(None)
    destinations = {n: d.model_copy(update={"directory": tmp_path / "aud"}) for n, d in config.destinations.items()}
    return config.model_copy(update={"destinations": destinations})


def test_a_cycle_lands_exactly_the_eligible_segment_members(database_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=11, customers=400, now=NOW, malformed=True)
    settings = make_settings(database_url=database_url)
    with Sandbox(NOW, store=shop) as sandbox:
        config, resolved = sandbox.resolve(_sandbox_config(tmp_path), settings)
        store = open_store(database_url)
        report = run_cycle(store, config, resolved, now=NOW)

        # bad input is counted and reported, never a crash and never a silent drop
        pull = store.run(report.pull.run_id or 0)
        assert pull.status == "partial"
        assert pull.counts["bad_records"] == 3
        problems = dict(store.problems(pull.id))
        assert problems[shop.malformed_ids["negative_total"]] == "negative total"
        assert problems[shop.malformed_ids["unknown_currency"]] == "unknown currency 'XXX'"
        assert "amount" in problems[shop.malformed_ids["non_numeric_amount"]]
        assert problems[shop.malformed_ids["invalid_email"]].startswith("warning: invalid email ignored")
        pull_row = next(r for r in status_rows(settings) if r["step"] == "pull")
        assert (pull_row["outcome"], pull_row["bad_records"]) == ("partial", 3)

        # each audience holds exactly the segment's eligible members: files, Mailchimp, Meta
        for name, mapping in config.mappings.items():
            assert report.syncs[name].status == "ok", name
            destination = build_destination(
                mapping.destination, config.destinations[mapping.destination], resolved, make_runtime(resolved)
            )
            members = store.members(store.segment_keys(mapping.segment)).values()
            expected = {
                destination.identity(m, config.options[name])
                for m in members
                if destination.ineligible_reason(m) is None
            }
            assert expected, name
            assert audience_now(sandbox, config, name) == expected, name
            assert set(store.acknowledged(name)) == expected, name

        # thirty days later, only the difference moves
        shop.advance(30, new_orders=60)
        later = run_cycle(store, config, resolved, now=NOW + timedelta(days=30))
        assert later.pull.orders < report.pull.orders / 5  # incremental, not a re-read of history
        engaged = config.mappings["engaged-30d-file"]
        keys = store.segment_keys(engaged.segment)
        expected = {sha256_hex(m.email) for m in store.members(keys).values() if m.email}
        assert read_audience(audience_path(tmp_path / "aud", engaged.audience)) == expected
        assert later.syncs["engaged-30d-file"].removed > 0  # people aged out of the 30-day window
        store.dispose()

    shown = render_status(status_rows(settings))
    for name in config.mappings:
        assert name in shown


def test_demo_then_status_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "AUDIENCE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'demo' / 'demo.sqlite3'}"}
    cli = [sys.executable, "-m", "worker.cli"]
    demo = subprocess.run(
        [*cli, "demo", "--customers", "300", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert "== cycle 1: initial sync" in demo.stdout and "30 days later" in demo.stdout
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, env=env, timeout=60, check=True)
    lines = status.stdout.splitlines()
    assert lines[0].split()[:4] == ["step", "mapping", "finished", "(UTC)"]
    for mapping in ("engaged-30d-file", "lapsed-60-180-file", "lapsed-180-plus-file", "buyers-file"):
        row = next(line for line in lines if mapping in line)
        assert row.split()[3] == "ok"
