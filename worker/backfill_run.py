"""``audience-sync backfill``: the whole store again through bulk exports, with progress and a summary."""

from __future__ import annotations

from connectors.kernel.redact import redact
from worker.backfill import file_of
from worker.cycle import PullResult, pull
from worker.factory import make_runtime
from worker.runner import Echo, Progress, prepared
from worker.settings import Settings
from worker.store import open_store
from worker.store.bulk import FINISHED_PHASES


def backfill_inline(settings: Settings, *, restart: bool = False, echo: Echo = print) -> PullResult:
    """``audience-sync backfill``: read the whole store again through bulk exports where the source
    has them (paging otherwise), resuming an unfinished one unless ``restart``; then page from the
    exports' start times, so nothing changed meanwhile is missed."""
    with prepared(settings) as (config, resolved):
        store = open_store(resolved.database_url)
        try:
            if restart:
                for row in store.bulk_history():
                    if row.phase not in FINISHED_PHASES:
                        file_of(resolved, row).unlink(missing_ok=True)
                        store.drop_staged_lines(row.id)
                        store.bulk_update(row.id, phase="abandoned", error="restarted by `backfill --restart`")
                        echo(f"abandoned the unfinished {row.stream} export #{row.id}")
            echo("backfilling from the store API …")
            result = pull(store, config, resolved, make_runtime(resolved), progress=BulkProgress(echo), force_bulk=True)
        finally:
            store.dispose()
    echo(f"  {result.summary()}, in {result.seconds:.1f}s")
    for stream, bulk in result.bulk.items():
        echo(f"  {stream}: {describe_bulk(bulk)}")
    if result.rejected or result.warnings:
        echo(f"  {result.rejected} records not usable, {result.warnings} warnings: `audience-sync run-problems`")
    if result.error:
        echo(f"  {result.status}: {redact(result.error)}")
    return result


def describe_bulk(bulk: dict[str, object]) -> str:
    words = f"export {bulk.get('operation') or '(none)'} {str(bulk.get('status') or '').lower()}, {bulk.get('phase')}"
    details = [
        f"{bulk[key]:,} {label}"
        for key, label in (
            ("downloaded_bytes", "bytes downloaded"),
            ("records", "records stored"),
            ("lines", "line items attached"),
            ("restarts", "restarts"),
        )
        if isinstance(bulk.get(key), int) and bulk[key]
    ]
    return words + (f" ({', '.join(details)})" if details else "") + (f": {bulk['error']}" if bulk.get("error") else "")


class BulkProgress(Progress):
    """Progress lines of a backfill: the phase of each stream's export and what it has done so far."""

    def __init__(self, echo: Echo, every: float = 2.0) -> None:
        super().__init__(echo, "backfill", every)

    def __call__(self, counts: dict[str, object]) -> None:
        if self.due():
            phase = counts.get("bulk") or "paging"
            shown = ", ".join(
                f"{k}={v:,}" for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool) and v
            )
            self.echo(f"  … {counts.get('stream')}: {phase}: {shown}")
