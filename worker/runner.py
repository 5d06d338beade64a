"""The embedded, in-process cycle: what ``audience-sync run`` and the demo execute (no Redis)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from connectors.kernel.redact import redact
from connectors.kernel.runtime import Runtime
from worker.config import AppConfig, load_config
from worker.cycle import PullResult, RecomputeResult, pull, recompute, sync_mapping, utc_now
from worker.factory import make_runtime
from worker.inbox import process_inbox
from worker.sandbox import Sandbox, needs_sandbox
from worker.settings import Settings
from worker.store import Store, open_store
from worker.sync import SyncResult

Echo = Callable[[str], None]


def load_app_config(settings: Settings) -> AppConfig:
    return load_config(settings.config)


@dataclass
class CycleReport:
    pull: PullResult
    recompute: RecomputeResult
    syncs: dict[str, SyncResult] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.pull.status in ("ok", "partial") and all(s.status in ("ok", "partial") for s in self.syncs.values())


@contextlib.contextmanager
def prepared(settings: Settings, now: datetime | None = None) -> Iterator[tuple[AppConfig, Settings]]:
    """The validated config, with any ``sandbox`` URLs pointed at emulators started here."""
    config = load_app_config(settings)
    if not needs_sandbox(config):
        yield config, settings
        return
    with Sandbox(now=now or utc_now(), customers=settings.sandbox_customers, state_dir=settings.sandbox_dir) as sandbox:
        yield sandbox.resolve(config, settings)


class Progress:
    """Prints a line at most every ``every`` seconds: progress on long steps without a flood."""

    def __init__(self, echo: Echo, label: str, every: float = 2.0) -> None:
        self.echo, self.label, self.every = echo, label, every
        self._last = 0.0

    def due(self) -> bool:
        """True at most once every ``every`` seconds."""
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True

    def __call__(self, counts: dict[str, object]) -> None:
        if self.due():
            shown = ", ".join(f"{k}={v}" for k, v in counts.items() if isinstance(v, int) and v)
            self.echo(f"  … {self.label}: {shown}")


def run_cycle(
    store: Store,
    config: AppConfig,
    settings: Settings,
    *,
    now: datetime,
    full: bool = False,
    echo: Echo = lambda _: None,
    runtime: Runtime | None = None,
) -> CycleReport:
    """Pull, recompute and sync every mapping in this process; ``runtime`` (its sleep, its clock) is
    the settings' own unless given."""
    started = time.monotonic()
    runtime = runtime or make_runtime(settings)
    echo("pulling from the store API …")
    pulled = pull(store, config, settings, runtime, progress=Progress(echo, "pull"), now=now)
    echo(
        f"  {pulled.summary()}, in {pulled.seconds:.1f}s; {pulled.rejected} records not usable,"
        f" {pulled.warnings} warnings → {pulled.status}"
    )
    if pulled.error:
        echo(f"  pull error: {redact(pulled.error)}")
    inbox = process_inbox(store, settings)  # store webhooks not processed yet (no API ran, say)
    if inbox.deliveries:
        echo(f"  {inbox.deliveries} store webhooks processed → {inbox.status}")
    echo("recomputing segments …")
    recomputed = recompute(store, config, now)
    echo(f"  {recomputed.customers} customers, {len(recomputed.sizes)} segments in {recomputed.seconds:.2f}s")
    report = CycleReport(pulled, recomputed)
    for name in config.mappings:
        echo(f"syncing {name} …")
        result = sync_mapping(store, config, settings, runtime, name, full=full, now=now, progress=Progress(echo, name))
        report.syncs[name] = result
    report.seconds = time.monotonic() - started
    return report


def render_cycle(report: CycleReport, config: AppConfig) -> str:
    header = (
        "mapping",
        "segment",
        "size",
        "eligible",
        "added",
        "removed",
        "rejected",
        "retries",
        "secs",
        "outcome",
    )
    rows: list[tuple[str, ...]] = [header]
    for name, r in report.syncs.items():
        mapping = config.mappings[name]
        rows.append(
            (
                name,
                mapping.segment,
                str(r.segment_size),
                str(r.eligible),
                str(r.added),
                str(r.removed),
                str(r.rejected),
                str(r.destination_stats.get("retries", 0)),
                f"{r.seconds:.2f}",
                r.status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for name, r in report.syncs.items():
        if r.error:
            lines.append(f"  {name}: {redact(r.error)}")
    return "\n".join(lines)


def run_cycle_inline(
    settings: Settings, *, now: datetime | None = None, full: bool = False, echo: Echo = print
) -> CycleReport:
    now = now or utc_now()
    with prepared(settings, now) as (config, resolved):
        store = open_store(resolved.database_url)
        try:
            report = run_cycle(store, config, resolved, now=now, full=full, echo=echo)
        finally:
            store.dispose()
    echo("")
    echo(render_cycle(report, config))
    echo(f"\ncycle finished in {report.seconds:.1f}s; `audience-sync status` shows the run history")
    return report


def sync_inline(settings: Settings, mapping: str, *, full: bool = False, echo: Echo = print) -> SyncResult:
    now = utc_now()
    with prepared(settings, now) as (config, resolved):
        store = open_store(resolved.database_url)
        try:
            result = sync_mapping(
                store,
                config,
                resolved,
                make_runtime(resolved),
                mapping,
                full=full,
                now=now,
                progress=Progress(echo, mapping),
            )
        finally:
            store.dispose()
    echo(
        f"{mapping}: {result.status}: added {result.added}, removed {result.removed}, rejected {result.rejected}"
        + (f" ({redact(result.error)})" if result.error else "")
    )
    return result
