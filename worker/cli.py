"""``audience-sync``: the operator's command line (the same operations as the control API)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from connectors.kernel.redact import install_log_redaction
from worker.config import ConfigFileError
from worker.settings import Settings, get_settings


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_redaction()


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"not an ISO 8601 date or time: {value!r}")
        raise
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
def main(verbose: bool) -> None:
    """Keep a store's marketing audiences true."""
    _setup_logging(verbose)


@main.command()
@click.option("--full", is_flag=True, help="Full resync of every mapping (replace where supported).")
@click.option("--now", "now_text", help="Clock for segment windows (ISO 8601; default: now).")
def run(full: bool, now_text: str | None) -> None:
    """Run one whole cycle in-process: pull, recompute, sync every mapping (no Redis needed)."""
    from worker.runner import run_cycle_inline

    try:
        report = run_cycle_inline(get_settings(), now=_parse_time(now_text), full=full, echo=click.echo)
    except ConfigFileError as exc:
        _fail(str(exc))
        return
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--restart", is_flag=True, help="Abandon an unfinished export and start over.")
def backfill(restart: bool) -> None:
    """Read the whole store again by bulk export (resuming an unfinished one), then page from its start."""
    from worker.backfill_run import backfill_inline

    try:
        result = backfill_inline(get_settings(), restart=restart, echo=click.echo)
    except ConfigFileError as exc:
        _fail(str(exc))
        return
    sys.exit(0 if result.status in ("ok", "partial") else 1)


@main.command()
@click.argument("mapping")
@click.option("--full", is_flag=True, help="Full replace instead of a diff.")
@click.option("--inline", is_flag=True, help="Run here and now instead of enqueueing for a worker.")
@click.option("--dry-run", "dry", is_flag=True, help="Show exactly what it would send; send nothing.")
def resync(mapping: str, full: bool, inline: bool, dry: bool) -> None:
    """Resync one MAPPING: ask the workers for it (or run it --inline, or see it first with --dry-run)."""
    settings = get_settings()
    try:
        from worker.runner import load_app_config

        config = load_app_config(settings)
        config.mapping(mapping)
    except ConfigFileError as exc:
        _fail(str(exc))
        return
    if dry:
        from worker.cycle import utc_now
        from worker.dryrun import dry_run, render_dry_run
        from worker.factory import make_runtime
        from worker.runner import prepared
        from worker.store import open_store

        with prepared(settings, utc_now()) as (resolved_config, resolved):
            store = open_store(resolved.database_url)
            try:
                report = dry_run(store, resolved_config, resolved, make_runtime(resolved), mapping, full=full)
            finally:
                store.dispose()
        click.echo(render_dry_run(report))
        return
    if inline:
        from worker.runner import sync_inline

        result = sync_inline(settings, mapping, full=full, echo=click.echo)
        sys.exit(0 if result.status in ("ok", "partial") else 1)
    from worker.queue import BrokerUnavailable, request_sync
    from worker.store import open_store

    store = open_store(settings.database_url)
    try:
        queued = request_sync(store, settings, mapping, full=full, reason="full replace" if full else "resync")
    except BrokerUnavailable as exc:
        _fail(f"{exc}; or run it here with `audience-sync resync {mapping}{' --full' if full else ''} --inline`")
        return
    finally:
        store.dispose()
    click.echo(queued.describe(settings.queue))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--history", "history", is_flag=True, help="Earlier runs, newest first (of MAPPING, if given).")
@click.option("--limit", default=20, show_default=True, help="Runs listed with --history.")
@click.argument("mapping", required=False)
def status(as_json: bool, history: bool, limit: int, mapping: str | None) -> None:
    """Last run of each step and mapping, each mapping's last problem, erasures; --history for earlier runs."""
    from worker.status import history_rows, render_history, render_status, status_rows

    settings = get_settings()
    if mapping is not None and not history:
        _fail("name a MAPPING together with --history (status shows every mapping)")
    if history:
        rows = history_rows(settings, mapping, limit)
        click.echo(json.dumps(rows, indent=2, default=str) if as_json else render_history(rows))
        return
    report = status_rows(settings)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        hint = ""
        if Path("var/demo/.env").exists() and not Path(".env").exists():
            hint = "\n(the demo's runs are in var/demo: `cd var/demo` and run `status` there)"
        click.echo(render_status(report, empty_hint=hint))


@main.command()
@click.option("--orders-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--as-of", "as_of", required=True, help="Clock for the windows (ISO 8601 date or time, UTC).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def segments(orders_csv: Path, as_of: str, out: Path) -> None:
    """Compute segment membership from a plain orders CSV, offline (no store, no server)."""
    from worker.orders_csv import segments_from_csv

    when = _parse_time(as_of)
    assert when is not None
    report = segments_from_csv(orders_csv, when, out)
    click.echo(f"{report.orders_used} orders, {report.customers} customers as of {when.date()}")
    for name, size in sorted(report.counts.items()):
        click.echo(f"{name:32} {size:>8}")
    click.echo(f"wrote {out} ({sum(report.counts.values())} rows)")
    if report.problems:
        click.echo(f"{len(report.problems)} rows not used:", err=True)
        for problem in report.problems[:50]:
            click.echo(f"  {problem.ref}: {problem.reason}", err=True)
        if len(report.problems) > 50:
            click.echo(f"  … and {len(report.problems) - 50} more", err=True)


@main.command()
@click.option("--now", "now_text", help="Clock for segment windows (ISO 8601; default: now).")
@click.option("--matrix", is_flag=True, help="Print the whole overlap matrix (default: pairs with Jaccard >= 0.5).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (always the whole matrix).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Preview this config file instead of AUDIENCE_SYNC_CONFIG (an edit, before it goes live).",
)
def preview(now_text: str | None, matrix: bool, as_json: bool, config_path: Path | None) -> None:
    """Segments of the config computed fresh from the store: size, change since the last run, revenue
    share, overlap, and warnings (empty, near-duplicate, too small for ad platforms)."""
    from worker.preview import preview_from_settings, render_preview

    settings = get_settings()
    if config_path is not None:
        settings = settings.model_copy(update={"config": config_path})
    try:
        result = preview_from_settings(settings, _parse_time(now_text))
    except ConfigFileError as exc:
        _fail(str(exc))
        return
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_preview(result, matrix=matrix))


@main.command()
@click.option("--customers", default=5000, show_default=True, help="Size of the synthetic store.")
@click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/demo"), show_default=True
)
@click.option(
    "--source",
    type=click.Choice(["shopify", "woocommerce"]),
    default="shopify",
    show_default=True,
    help="Store platform the sandbox shop is served as.",
)
def demo(customers: int, workdir: Path, source: str) -> None:
    """Sandbox demo: two cycles, 30 days apart, against the built-in emulators."""
    from worker.demo import run_demo

    run_demo(customers=customers, workdir=workdir, echo=click.echo, source=source)


@main.command("hash")
@click.option("--platform", type=click.Choice(["meta", "google", "tiktok"]), required=True)
@click.option("--kind", type=click.Choice(["email", "phone"]), required=True)
@click.option("--region", default=None, help="Default region for phones without a country code.")
def hash_cmd(platform: str, kind: str, region: str | None) -> None:
    """Read values on stdin; print each one's normalized form and SHA-256, tab-separated, one line per line.

    An unusable line prints ``invalid``, a dash and the reason, so the output lines up with the input."""
    from connectors.kernel.identifiers import match_key

    default_region = region or get_settings().default_phone_region
    for line in sys.stdin:
        value = line.rstrip("\n")
        if not value.strip():
            click.echo("invalid\t-\tempty line")
            continue
        key = match_key(value, kind=kind, platform=platform, default_region=default_region)  # type: ignore[arg-type]
        if key is None:
            why = (
                "not a valid email address"
                if kind == "email"
                else f"not a valid phone number (region {default_region})"
            )
            click.echo(f"invalid\t-\t{why}")
        else:
            click.echo(f"{key[0]}\t{key[1]}")


@main.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(email: str, yes: bool) -> None:
    """Erase a person (by EMAIL) from the store and every destination; the audit keeps only a hash."""
    from connectors.kernel.redact import mask_email
    from worker.cycle import utc_now
    from worker.erasure import ErasureError, erase_now
    from worker.factory import make_runtime
    from worker.runner import prepared
    from worker.store import open_store

    if not yes:
        click.confirm(f"Erase {mask_email(email)} everywhere? This cannot be undone.", abort=True)
    settings = get_settings()
    now = utc_now()
    try:
        with prepared(settings, now) as (config, resolved):
            store = open_store(resolved.database_url)
            try:
                report = erase_now(store, config, resolved, make_runtime(resolved), email, now)
            finally:
                store.dispose()
    except (ErasureError, ConfigFileError) as exc:
        _fail(str(exc))
        return
    from worker.erasure_report import render_erasure

    click.echo(render_erasure(report))
    sys.exit(0 if report.complete else 1)


@main.command("export-customer")
@click.argument("email")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file (owner-only).")
def export_customer_cmd(email: str, out: Path | None) -> None:
    """What we hold about a person (answers Shopify's customers/data_request): records, orders,
    segments and destinations, as JSON."""
    import os

    from worker.erasure import ErasureError, export_customer
    from worker.store import open_store

    store = open_store(get_settings().database_url)
    try:
        data = export_customer(store, email)
    except ErasureError as exc:
        _fail(str(exc))
        return
    finally:
        store.dispose()
    text = json.dumps(data, indent=2)
    if out is None:
        click.echo(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    click.echo(
        f"wrote {out}: {len(data['orders'])} orders, {len(data['segments'])} segments, "
        f"{len(data['destinations'])} destinations",
        err=True,
    )


@main.command()
@click.argument("mapping", required=False)
@click.option("--repair", is_flag=True, help="Fix the drift on both sides through the normal sync.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reconcile(mapping: str | None, repair: bool, as_json: bool) -> None:
    """Compare what each destination really holds with what we acknowledged (every mapping, or MAPPING)."""
    from worker.cycle import utc_now
    from worker.factory import make_runtime
    from worker.reconcile import reconcile as run_reconcile
    from worker.runner import prepared
    from worker.store import open_store

    settings = get_settings()
    now = utc_now()
    try:
        with prepared(settings, now) as (config, resolved):
            names = [config.mapping(mapping).name] if mapping else list(config.mappings)
            store = open_store(resolved.database_url)
            try:
                drifts = [
                    run_reconcile(store, config, resolved, make_runtime(resolved), n, repair=repair, now=now)
                    for n in names
                ]
            finally:
                store.dispose()
    except ConfigFileError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in drifts], indent=2))
    else:
        for drift in drifts:
            click.echo(drift.render())
    left = [d for d in drifts if d.readable and ((d.after or d).missing or (d.after or d).extra)]
    sys.exit(1 if left else 0)


@main.command("migrate")
@click.option("--check", is_flag=True, help="Only show the revisions; change nothing (exit 1 when behind the head).")
def migrate_cmd(check: bool) -> None:
    """Show the database's schema revision and this program's head, and upgrade to it (under the migration lock)."""
    from sqlalchemy import create_engine

    from worker.store import open_store
    from worker.store.db import sqlite_path
    from worker.store.migrations import LATEST, describe

    settings = get_settings()
    path = sqlite_path(settings.database_url)
    current = "none (new database)"
    if path is None or path.exists():
        engine = create_engine(settings.database_url, hide_parameters=True)
        with engine.connect() as conn:
            current = describe(conn)
        engine.dispose()
    click.echo(f"database: {settings_summary(settings)['database']}")
    click.echo(f"current:  {current}")
    click.echo(f"head:     revision {LATEST}")
    at_head = current == f"revision {LATEST}"
    if check:
        sys.exit(0 if at_head else 1)
    try:
        open_store(settings.database_url).dispose()
    except RuntimeError as exc:
        _fail(str(exc))
    click.echo("already at the head" if at_head else f"upgraded to revision {LATEST}")


@main.group()
def webhooks() -> None:
    """Shopify store webhooks (orders, customers, consent): audiences fresh within a minute."""


@webhooks.command("register")
@click.option("--address", required=True, help="The control API's public HTTPS base URL, as Shopify reaches it.")
def webhooks_register(address: str) -> None:
    """Subscribe the shop to every store topic (idempotent: lists what exists, creates what is missing)."""
    from worker.webhook_subscriptions import register_inline

    try:
        result = register_inline(get_settings(), address, echo=click.echo)
    except (ConfigFileError, ValueError) as exc:
        _fail(str(exc))
        return
    sys.exit(1 if result.refused else 0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def api(host: str, port: int) -> None:
    """Serve the control API and dashboard."""
    import uvicorn

    from worker.api import TokenError, create_app
    from worker.logsetup import uvicorn_log_config

    try:
        app = create_app(get_settings())
    except TokenError as exc:
        _fail(str(exc))
        return
    except ConfigFileError as exc:
        _fail(str(exc))
        return
    uvicorn.run(app, host=host, port=port, log_config=uvicorn_log_config())


def settings_summary(settings: Settings) -> dict[str, Any]:
    return {"database": settings.database_url.split("@")[-1], "config": str(settings.config or "sandbox")}


if __name__ == "__main__":
    main()
