"""What the status command and the control API show: the last run of each step and mapping."""

from __future__ import annotations

from typing import Any

from worker.settings import Settings
from worker.store import open_store


def status_rows(settings: Settings) -> list[dict[str, Any]]:
    store = open_store(settings.database_url)
    try:
        rows = []
        for run in store.last_runs():
            counts = run.counts
            rows.append(
                {
                    "step": run.kind,
                    "mapping": run.mapping or "-",
                    "started_at": run.started_at.isoformat(timespec="seconds"),
                    "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
                    "outcome": run.status,
                    "added": counts.get("added"),
                    "removed": counts.get("removed"),
                    "rejected": counts.get("rejected"),
                    "pulled": counts.get("pulled"),
                    "bad_records": counts.get("bad_records"),
                    "desired": counts.get("desired"),
                    "seconds": counts.get("seconds"),
                    "error": run.error,
                    "run_id": run.id,
                }
            )
        return rows
    finally:
        store.dispose()


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render_status(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs yet: try `audience-sync run` or `audience-sync demo`"
    header = (
        "step",
        "mapping",
        "finished (UTC)",
        "outcome",
        "pulled",
        "bad",
        "desired",
        "added",
        "removed",
        "rejected",
        "secs",
    )
    table = [header]
    for r in rows:
        table.append(
            (
                r["step"],
                r["mapping"],
                _cell(r["finished_at"] or "running…"),
                r["outcome"],
                _cell(r["pulled"]),
                _cell(r["bad_records"]),
                _cell(r["desired"]),
                _cell(r["added"]),
                _cell(r["removed"]),
                _cell(r["rejected"]),
                _cell(r["seconds"]),
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    errors = [f"  {r['mapping']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines + (["", "errors:", *errors] if errors else []))
