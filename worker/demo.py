"""The sandbox demo: a synthetic store, two cycles 30 days apart, a summary a newcomer can read.

The first cycle happens 30 days in the past and the second at the real now, so every command a
person types afterwards runs at the same clock the demo ended at. The demo's folder holds its
database, config, sandbox state, audience files and a ``.env`` naming them, so the printed next
commands (run from that folder) see exactly what the demo left.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.kernel.emulator import Faults
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.shopify.synthetic import SyntheticStore
from worker.config import DEFAULT_CONFIG, AppConfig, load_config
from worker.runner import CycleReport, render_cycle, run_cycle
from worker.sandbox import Sandbox
from worker.settings import Settings
from worker.status import render_status, status_rows
from worker.store import open_store

Echo = Callable[[str], None]
DEMO_DAYS = 30
#: the ``[source]`` table of the demo's config per store platform the sandbox emulates (``--source``)
DEMO_SOURCES = {
    "shopify": '[source]\ntype = "shopify"\nshop_url = "sandbox"\n',
    "woocommerce": (
        '[source]\ntype = "woocommerce"\nbase_url = "sandbox"\n'
        "# the sandbox store keeps consent where Mailchimp for WooCommerce does\n"
        'consent_meta_key = "mailchimp_woocommerce_is_subscribed"\n'
    ),
}


def _segments_line(report: CycleReport) -> str:
    return ", ".join(f"{name} {size}" for name, size in sorted(report.recompute.sizes.items()) if size)


def _make_it_realistic(sandbox: Sandbox, config: AppConfig, shop: SyntheticStore, echo: Echo) -> None:
    """Real APIs fail now and then, and some contacts unsubscribed at the email platform itself."""
    for kind in ("mailchimp", "meta"):
        emulator = sandbox.emulator(kind)
        if emulator is not None:
            emulator.faults = Faults(error_rate=0.03, seed=17)
    mailchimp = sandbox.emulator("mailchimp")
    if isinstance(mailchimp, MailchimpEmulator):
        lists = {m.audience for m in config.mappings.values() if config.destinations[m.destination].type == "mailchimp"}
        for list_id in lists:
            for email in _subscribers(shop)[:3]:
                mailchimp.add_member(list_id, email, status="unsubscribed")
        _campaign_activity(mailchimp, sorted(lists)[0] if lists else "sandbox-list", shop)
    echo(
        "  sandbox APIs answer 3% of requests with a 5xx, 3 subscribers unsubscribed at Mailchimp itself,"
        " and last week's newsletter was opened or clicked by a quarter of subscribers"
    )


def _subscribers(shop: SyntheticStore) -> list[str]:
    return sorted(
        c["defaultEmailAddress"]["emailAddress"]
        for c in shop.customers
        if c.get("defaultEmailAddress") and c["defaultEmailAddress"].get("marketingState") == "SUBSCRIBED"
    )


def _campaign_activity(mailchimp: MailchimpEmulator, list_id: str, shop: SyntheticStore) -> None:
    """A newsletter sent a week ago: opens and clicks make some lapsed buyers engaged again."""
    rng = random.Random(7)
    sent = shop.now - timedelta(days=7)
    mailchimp.send_campaign("sandbox-newsletter-1", list_id, sent)
    for customer in shop.customers:
        address = customer.get("defaultEmailAddress") or {}
        if address.get("marketingState") == "SUBSCRIBED" and rng.random() < 0.25:
            action = "click" if rng.random() < 0.3 else "open"
            mailchimp.record_activity(
                "sandbox-newsletter-1", address["emailAddress"], action, sent + timedelta(hours=rng.uniform(1, 96))
            )


def write_demo_files(workdir: Path, source: str = "shopify") -> Settings:
    """The demo's config (the built-in one, audience files in the demo folder, the chosen store
    platform as its source) and its ``.env``."""
    config = DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        'directory = "var/audiences"', 'directory = "audiences"'
    )
    config, found = re.subn(r"^\[source\]\n(?:[^\[\n].*\n)*", DEMO_SOURCES[source], config, count=1, flags=re.M)
    if not found:
        raise ValueError(f"{DEFAULT_CONFIG} has no [source] table")
    (workdir / "config.toml").write_text(config, encoding="utf-8")
    env = (
        "# written by `audience-sync demo`: commands run from this folder use the demo's state\n"
        "AUDIENCE_SYNC_DATABASE_URL=sqlite:///demo.sqlite3\n"
        "AUDIENCE_SYNC_CONFIG=config.toml\n"
        "AUDIENCE_SYNC_SANDBOX_DIR=sandbox\n"
        "# the web app's tokens for this demo only (a deployment makes its own)\n"
        f"AUDIENCE_SYNC_API_TOKEN={secrets.token_urlsafe(32)}\n"
        f"AUDIENCE_SYNC_OPERATOR_TOKEN={secrets.token_urlsafe(32)}\n"
    )
    fd = os.open(workdir / ".env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(env)
    return Settings(
        _env_file=None,
        database_url=f"sqlite:///{workdir / 'demo.sqlite3'}",
        config=workdir / "config.toml",
        sandbox_dir=workdir / "sandbox",
    )


def _in_folder(config: AppConfig, workdir: Path) -> AppConfig:
    """The config's relative folders (audience files) taken from the demo's folder, whatever the cwd."""
    destinations = {}
    for name, dest in config.destinations.items():
        folder = getattr(dest, "directory", None)
        if isinstance(folder, Path) and not folder.is_absolute():
            dest = dest.model_copy(update={"directory": workdir / folder})
        destinations[name] = dest
    return config.model_copy(update={"destinations": destinations})


def next_commands(workdir: Path, erasable: str | None) -> list[str]:
    """What to try next, each line exactly as it runs (a test runs them)."""
    here = Path.cwd()
    folder = os.path.relpath(workdir, here)
    program = os.path.relpath(Path(sys.executable).parent / "audience-sync", workdir)
    lines = [f"cd {folder}"]
    lines += [
        f"{program} status",
        f"{program} status --history newsletter-mailchimp",
        f"{program} preview",
        f"{program} run",
    ]
    if erasable:
        lines.append(f"{program} erase {erasable} --yes")
    return lines


def run_demo(
    *, customers: int, workdir: Path, echo: Echo = print, now: datetime | None = None, source: str = "shopify"
) -> None:
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, mode=0o700)
    settings = write_demo_files(workdir, source)
    end = (now or datetime.now(UTC)).replace(microsecond=0)
    start = end - timedelta(days=DEMO_DAYS)

    echo(f"building a synthetic store of {customers} customers with two years of orders …")
    with Sandbox(start, customers=customers, state_dir=settings.sandbox_dir) as sandbox:
        shop = sandbox.store
        echo(f"  {len(shop.customers)} customers, {len(shop.orders)} orders (including a few malformed on purpose)")
        config, resolved = sandbox.resolve(_in_folder(load_config(settings.config), workdir), settings)
        served = sandbox.emulator(config.source.type)
        if served is not None:
            echo(f"  served as a {config.source.type} store by its contract emulator at {served.url}")
        _make_it_realistic(sandbox, config, shop, echo)
        store = open_store(resolved.database_url)
        try:
            echo(f"\n== cycle 1: initial sync ({start.date()}, {DEMO_DAYS} days ago) ==")
            first = run_cycle(store, config, resolved, now=start, echo=echo)
            echo(f"segments: {_segments_line(first)}")
            echo(render_cycle(first, config))

            changes = sandbox.advance(DEMO_DAYS, new_orders=max(50, customers // 8))
            echo(
                f"\n== today ({end.date()}): the shop took {len(changes.new_orders)} new orders and "
                f"{len(changes.new_customers)} new customers; {len(changes.updated_orders)} older orders changed "
                f"(refunds) and {len(changes.updated_customers)} customers changed (consent) =="
            )
            second = run_cycle(store, config, resolved, now=end, echo=echo)
            echo(f"segments: {_segments_line(second)}")
            echo(render_cycle(second, config))
            pushed = set(store.acknowledged("newsletter-mailchimp"))
            subscribed = [e for e in _subscribers(shop)[3:] if e.lower() in pushed]
        finally:
            store.dispose()

    echo("\n== status (audience-sync status) ==")
    echo(render_status(status_rows(settings)))
    echo(
        f"\nEverything the demo made is in {workdir}: its database (demo.sqlite3), config (config.toml),"
        " sandbox shop and destination state (sandbox/), audience files (audiences/)."
    )
    echo("Try next (from the demo's folder, whose .env points every command at the demo's state):")
    for line in next_commands(workdir, subscribed[0] if subscribed else None):
        echo(f"  {line}")
    operator = next(
        line.split("=", 1)[1]
        for line in (workdir / ".env").read_text().splitlines()
        if line.startswith("AUDIENCE_SYNC_OPERATOR_TOKEN=")
    )
    program = os.path.relpath(Path(sys.executable).parent / "audience-sync", workdir)
    echo("Open the marketer's web app on the demo's data (it runs until you stop it with Ctrl-C):")
    echo(f"  cd {os.path.relpath(workdir, Path.cwd())} && {program} api")
    echo(f"  then browse http://127.0.0.1:8000/app/ and sign in with the operator token {operator}")
    echo("  (the admin token, for erasure and settings, is AUDIENCE_SYNC_API_TOKEN in the demo's .env)")
    echo("README.md → 'Run against a real store' to point it at Shopify and your destinations")
