"""The sandbox demo: a synthetic store, two cycles 30 days apart, a summary a newcomer can read."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.emulators.mailchimp import MailchimpEmulator
from connectors.emulators.server import Faults
from connectors.emulators.synthetic import SyntheticStore
from worker.config import AppConfig, load_config
from worker.runner import CycleReport, render_cycle, run_cycle
from worker.sandbox import Sandbox
from worker.settings import Settings
from worker.status import render_status, status_rows
from worker.store import open_store

Echo = Callable[[str], None]


def _with_directory(config: AppConfig, directory: Path) -> AppConfig:
    destinations = {
        name: dest.model_copy(update={"directory": directory}) if hasattr(dest, "directory") else dest
        for name, dest in config.destinations.items()
    }
    return config.model_copy(update={"destinations": destinations})


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
        subscribed = sorted(
            c["defaultEmailAddress"]["emailAddress"]
            for c in shop.customers
            if c.get("defaultEmailAddress") and c["defaultEmailAddress"].get("marketingState") == "SUBSCRIBED"
        )[:3]
        for list_id in lists:
            for email in subscribed:
                mailchimp.add_member(list_id, email, status="unsubscribed")
        _campaign_activity(mailchimp, sorted(lists)[0] if lists else "sandbox-list", shop)
    echo(
        "  sandbox APIs answer 3% of requests with a 5xx, 3 subscribers unsubscribed at Mailchimp itself,"
        " and last week's newsletter was opened or clicked by a quarter of subscribers"
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


def run_demo(*, customers: int, workdir: Path, echo: Echo = print, now: datetime | None = None) -> None:
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    audiences = workdir / "audiences"
    audiences.mkdir(parents=True)
    database = workdir / "demo.sqlite3"
    settings = Settings(_env_file=None, database_url=f"sqlite:///{database}", config=None)
    start = (now or datetime.now(UTC)).replace(microsecond=0)

    echo(f"building a synthetic store of {customers} customers with two years of orders …")
    shop = SyntheticStore(seed=2026, customers=customers, now=start, malformed=True)
    echo(f"  {len(shop.customers)} customers, {len(shop.orders)} orders (including a few malformed on purpose)")

    with Sandbox(start, store=shop) as sandbox:
        config, resolved = sandbox.resolve(_with_directory(load_config(None), audiences), settings)
        _make_it_realistic(sandbox, config, shop, echo)
        store = open_store(resolved.database_url)
        try:
            echo(f"\n== cycle 1: initial sync ({start.date()}) ==")
            first = run_cycle(store, config, resolved, now=start, echo=echo)
            echo(f"segments: {_segments_line(first)}")
            echo(render_cycle(first, config))

            later = start + timedelta(days=30)
            changes = shop.advance(30, new_orders=max(50, customers // 8))
            echo(
                f"\n== 30 days later ({later.date()}): {len(changes.new_orders)} new orders, "
                f"{len(changes.updated_orders)} updated, {len(changes.new_customers)} new customers =="
            )
            second = run_cycle(store, config, resolved, now=later, echo=echo)
            echo(f"segments: {_segments_line(second)}")
            echo(render_cycle(second, config))
        finally:
            store.dispose()

    echo("\n== status (audience-sync status) ==")
    echo(render_status(status_rows(settings)))
    echo(
        f"\nAudience files (JSON lines, one add/remove record each): {audiences}\n"
        f"Run history and rejected members: {database}\n"
        "Try next:\n"
        f"  AUDIENCE_SYNC_DATABASE_URL=sqlite:///{database} .venv/bin/audience-sync status\n"
        "  .venv/bin/audience-sync run            # one cycle against the sandbox, into var/\n"
        "  .venv/bin/audience-sync segments --orders-csv examples/orders.csv --as-of 2026-06-01 --out /tmp/s.csv\n"
        "  README.md → 'Run against a real store' to point it at Shopify and your destinations"
    )
