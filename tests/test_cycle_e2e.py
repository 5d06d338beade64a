"""A whole in-process cycle: Shopify emulator → store → segments → file audiences, with bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from connectors.file.destination import audience_path, read_audience
from connectors.google.emulator import GoogleDataManagerEmulator
from connectors.google.members import consent_refusal
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Consent
from connectors.klaviyo.emulator import KlaviyoEmulator
from connectors.shopify.synthetic import SyntheticStore
from connectors.tiktok.emulator import TikTokEmulator
from tests.conftest import make_settings
from tests.helpers import audience_now
from tests.services import free_port
from worker.config import AppConfig, load_config
from worker.factory import build_destination, make_runtime
from worker.runner import run_cycle
from worker.sandbox import Sandbox
from worker.status import render_status, status_rows
from worker.store import Store, open_store

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _sandbox_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = load_config(None)
    destinations = {n: d.model_copy(update={"directory": tmp_path / "aud"}) for n, d in config.destinations.items()}
    return config.model_copy(update={"destinations": destinations})


def test_a_cycle_lands_exactly_the_eligible_segment_members(database_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=11, customers=400, now=NOW, malformed=True)
    settings = make_settings(database_url=database_url)
    with Sandbox(NOW, store=shop, state_dir=tmp_path / "sandbox") as sandbox:
        config, resolved = sandbox.resolve(_sandbox_config(tmp_path), settings)
        store = open_store(database_url)
        naps: list[float] = []  # import jobs and request statuses are polled after a wait: recorded, not slept
        runtime = make_runtime(resolved, sleep=naps.append)
        report = run_cycle(store, config, resolved, now=NOW, runtime=runtime)

        # bad input is counted and reported, never a crash and never a silent drop
        pull = store.run(report.pull.run_id or 0)
        assert pull.status == "partial"
        assert pull.counts["bad_records"] == 3
        problems = dict(store.problems(pull.id))
        assert problems[shop.malformed_ids["negative_total"]] == "negative total"
        assert problems[shop.malformed_ids["unknown_currency"]] == "unknown currency 'XXX'"
        assert "amount" in problems[shop.malformed_ids["non_numeric_amount"]]
        assert problems[shop.malformed_ids["invalid_email"]].startswith("warning: invalid email ignored")
        pull_row = next(r for r in status_rows(settings)["steps"] if r["step"] == "pull")
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
        _klaviyo_google_tiktok_hold_what_they_may(sandbox, config, store)

        # thirty days later, only the difference moves
        shop.advance(30, new_orders=60)
        later = run_cycle(store, config, resolved, now=NOW + timedelta(days=30), runtime=runtime)
        assert later.pull.orders < report.pull.orders / 5  # incremental, not a re-read of history
        engaged = config.mappings["engaged-30d-file"]
        keys = store.segment_keys(engaged.segment)
        expected = {sha256_hex(m.email) for m in store.members(keys).values() if m.email}
        assert read_audience(audience_path(tmp_path / "aud", engaged.audience)) == expected
        assert later.syncs["engaged-30d-file"].removed > 0  # people aged out of the 30-day window
        held = {name: audience_now(sandbox, config, name) for name in config.mappings}
        assert all(held[name] == set(store.acknowledged(name)) for name in config.mappings)
        store.dispose()

    # the next command's sandbox opens every destination with what it held when this one closed
    with Sandbox(NOW, store=shop, state_dir=tmp_path / "sandbox") as reopened:
        config, _ = reopened.resolve(_sandbox_config(tmp_path), settings)
        assert {name: audience_now(reopened, config, name) for name in config.mappings} == held

    shown = render_status(status_rows(settings))
    for name in config.mappings:
        assert name in shown


def _klaviyo_google_tiktok_hold_what_they_may(sandbox: Sandbox, config: AppConfig, store: Store) -> None:
    """Read straight from the emulators: Klaviyo lists hold the segment's consented addresses, profiles
    subscribed at Klaviyo; Google and TikTok hold the segment's email hashes and never an address."""
    klaviyo = sandbox.emulator("klaviyo")
    assert isinstance(klaviyo, KlaviyoEmulator)
    for name in ("engaged-30d-klaviyo", "lapsed-60-180-klaviyo", "lapsed-180-plus-klaviyo"):
        mapping = config.mappings[name]
        members = store.members(store.segment_keys(mapping.segment)).values()
        consented = {m.email.lower() for m in members if m.email and m.email_consent == Consent.SUBSCRIBED}
        held = klaviyo.list_members(mapping.audience)
        assert consented and held == consented, name
        assert len(consented) < len(members), f"{name}: the segment should hold unconsented people too"
        assert {klaviyo.profile(e).consent for e in held} == {"SUBSCRIBED"}, name  # type: ignore[union-attr]

    buyers = store.members(store.segment_keys("buyers")).values()
    # Google takes no opted-out buyer, nor one in the EEA, the UK or Switzerland without consent
    allowed = {sha256_hex(m.email.strip().lower()) for m in buyers if m.email and consent_refusal(m, "US") is None}
    opted_out = {
        sha256_hex(m.email.strip().lower()) for m in buyers if m.email and m.email_consent == Consent.UNSUBSCRIBED
    }
    google = sandbox.emulator("google")
    assert isinstance(google, GoogleDataManagerEmulator)
    mapping = config.mappings["buyers-google"]
    account = config.destinations[mapping.destination].operating_account.account_id  # type: ignore[union-attr]
    keys = {k for r in google.member_records(account, mapping.audience) for k in r.keys}
    assert keys and all(re.fullmatch(r"(email|phone):[0-9a-f]{64}", k) for k in keys)
    held_emails = {k.removeprefix("email:") for k in keys if k.startswith("email:")}
    assert opted_out and held_emails == allowed and not held_emails & opted_out

    tiktok = sandbox.emulator("tiktok")
    assert isinstance(tiktok, TikTokEmulator)
    engaged = store.members(store.segment_keys("engaged_30d")).values()
    rows = tiktok.audience(config.mappings["engaged-30d-tiktok"].audience)
    cells = {cell for row in rows for cell in row}
    assert cells and all(t in ("EMAIL_SHA256", "PHONE_SHA256") and re.fullmatch("[0-9a-f]{64}", v) for t, v in cells)
    assert {v for t, v in cells if t == "EMAIL_SHA256"} == {
        sha256_hex(m.email.strip().lower()) for m in engaged if m.email
    }

    sent = json.dumps([body for _, _, body in google.bodies + tiktok.bodies])
    assert "@" not in sent  # no address (raw PII) ever left for an ad platform


def test_the_demo_ends_at_the_real_now_and_every_command_it_prints_works_as_printed(tmp_path: Path) -> None:
    # the demo runs on its own .env, as a new user's shell would: nothing of the caller's settings leaks in
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCE_SYNC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    demo = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--customers", "300", "--workdir", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    assert "== cycle 1: initial sync" in out and "30 days ago" in out
    assert f"== today ({datetime.now(UTC).date()})" in out
    # the counts reconcile: what was new, changed and only re-read in the overlap window
    assert "re-read unchanged in the overlap window" in out
    tried = out.split("Try next", 1)[1].split("Open the marketer's web app", 1)[0].splitlines()[1:]
    commands = [line.strip() for line in tried if line.startswith("  ")]
    assert commands[0] == "cd demo" and any(" erase " in c for c in commands)

    outputs: dict[str, str] = {}
    here = tmp_path
    for command in commands:
        if command.startswith("cd "):
            here = here / command.removeprefix("cd ")
            continue
        ran = subprocess.run(command, shell=True, cwd=here, capture_output=True, text=True, env=env, timeout=300)
        assert ran.returncode == 0, f"{command}: {ran.stdout}{ran.stderr}"
        outputs[command.split(" ", 2)[1] + (" --history" if "--history" in command else "")] = ran.stdout

    # status right after the demo shows the demo's runs, with the column names of the demo's table
    status = outputs["status"]
    assert "no runs yet" not in status
    assert status.splitlines()[0].split()[:2] == ["step", "finished"]
    assert "eligible" in status and "newsletter-mailchimp" in status
    assert "run #" in outputs["status --history"] or "newsletter-mailchimp" in outputs["status --history"]
    # nothing happened between the demo's last cycle and these commands: no phantom changes
    preview = outputs["preview"]
    changes = [line.split()[2] for line in preview.splitlines() if line.startswith(("engaged_30d ", "buyers "))]
    assert changes and all(c in ("+0", "0") for c in changes), preview
    table = outputs["run"].split("mapping", 1)[1].splitlines()[1:]
    moved = [row.split() for row in table if row.strip() and not row.startswith(" ")]
    names = set(load_config(None).mappings)
    moved = [row for row in moved if row and row[0] in names]
    assert len(moved) == len(names) and all(row[4] == "0" and row[5] == "0" for row in moved), outputs["run"]
    erased = outputs["erase"]
    assert "was a member" in erased and "erasure complete" in erased

    # the printed way into the web app works on the demo's data, as printed
    opening = out.split("Open the marketer's web app", 1)[1].splitlines()
    command = opening[1].strip()
    token = opening[2].rsplit(" ", 1)[1]
    folder, _, program = command.partition(" && ")
    port = str(free_port())
    server = subprocess.Popen(
        f"{program} --port {port}",
        shell=True,
        cwd=tmp_path / folder.removeprefix("cd "),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        with httpx.Client(base_url=base, follow_redirects=True) as browser:
            assert browser.post("/app/sign-in", data={"token": token}).url.path == "/app/"
            for path in (
                "/app/",
                "/app/segments/engaged_30d",
                "/app/mappings/newsletter-mailchimp",
                "/app/mappings/buyers-meta/dry-run",
                "/app/runs?step=sync",
            ):
                page = browser.get(path)
                assert page.status_code == 200, path
                assert "<svg" in page.text or path != "/app/"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)


def wait_until_up(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{base}/healthz")
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
