"""What the status command and the control API show.

The last run of each step and mapping, and, per mapping, the last run that needed attention (a
``partial`` first cycle stays visible after a clean second one), erasures still in progress and syncs
owed; ``history`` lists earlier runs. Column names are the demo's: ``eligible`` everywhere.
"""

from __future__ import annotations

from typing import Any

from worker.credentials import credential_problems
from worker.settings import Settings
from worker.store import RunRow, Store, open_store

PROBLEMS = ("partial", "failed", "needs_attention", "paused", "interrupted")


def _when(run: RunRow) -> str | None:
    return run.finished_at.isoformat(timespec="seconds") if run.finished_at else None


def run_dict(run: RunRow) -> dict[str, Any]:
    c = run.counts
    row: dict[str, Any] = {
        "run_id": run.id,
        "step": run.kind,
        "mapping": run.mapping,
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "finished_at": _when(run),
        "outcome": run.status,
        "seconds": c.get("seconds"),
        "error": run.error,
    }
    if run.kind == "pull":
        row |= {"pulled": c.get("pulled"), "bad_records": c.get("bad_records"), "warnings": c.get("warnings")}
        row |= {"new": c.get("new"), "changed": c.get("changed"), "reread": c.get("reread")}
    elif run.kind == "recompute":
        row |= {"customers": c.get("customers"), "segments": len(c.get("segments") or {})}
    else:
        eligible = c.get("eligible", c.get("desired"))  # runs recorded before v4 said "desired"
        row |= {
            "segment_size": c.get("segment_size"),
            "eligible": eligible,
            "added": c.get("added"),
            "removed": c.get("removed"),
            "rejected": c.get("rejected"),
            "full": bool(c.get("full")),
            #: incremental (what can have changed was examined) or full (everyone)
            "plan": c.get("plan"),
        }
        if c.get("parts"):  # a split sync: its parts are sent by the workers
            row |= {"parts": c.get("parts"), "parts_done": c.get("parts_done", 0)}
    return row


def status_report(store: Store) -> dict[str, Any]:
    last = store.last_runs()
    mappings = []
    for run in (r for r in last if r.kind == "sync"):
        assert run.mapping is not None
        problem = next(
            (r for r in store.recent_runs(limit=200, mapping=run.mapping) if r.status in PROBLEMS),
            None,
        )
        mappings.append(
            {
                **run_dict(run),
                "last_problem": run_dict(problem) if problem is not None and problem.id != run.id else None,
                "rejected_now": len(store.rejected(run.mapping)),
                "platform_report": platform_report(run.counts),
            }
        )
    return {
        "steps": [run_dict(r) for r in last if r.kind != "sync"],
        "mappings": mappings,
        "erasures": [e.to_dict() for e in store.erasures(limit=20)],
        "credentials": [{"source": k, "problem": v} for k, v in credential_problems(store).items()],
        "owed_syncs": [
            {"mapping": o.mapping, "full": o.full, "reason": o.reason, "requested_at": o.requested_at.isoformat()}
            for o in store.owed_syncs()
        ],
        "bulk_exports": bulk_exports(store),
    }


def platform_report(counts: dict[str, Any]) -> dict[str, dict[str, int]] | None:
    """What the platform said of the last run's requests after the fact (Google's ``requestStatus``:
    statuses, match-rate ranges, processing errors), when the destination reports it."""
    report: dict[str, dict[str, int]] = {}
    for name in ("request_statuses", "match_rate_ranges", "processing_errors"):
        value = counts.get(f"dest_{name}")
        if isinstance(value, dict) and value:
            report[name] = {str(k): int(v) for k, v in value.items()}
    return report or None


def _counted(values: dict[str, int]) -> str:
    return ", ".join(f"{_plain(name)} x{n:,}" for name, n in sorted(values.items()))


def _plain(name: str) -> str:
    """``MATCH_RATE_RANGE_61_TO_70`` -> ``61-70%``; ``PROCESSING_ERROR_REASON_INVALID_FORMAT`` -> ``invalid format``."""
    bounds = name.removeprefix("MATCH_RATE_RANGE_").split("_TO_")
    if name.startswith("MATCH_RATE_RANGE_") and len(bounds) == 2:
        return f"{bounds[0]}-{bounds[1]}%"
    return name.removeprefix("PROCESSING_ERROR_REASON_").removeprefix("MATCH_RATE_RANGE_").lower().replace("_", " ")


def bulk_exports(store: Store) -> list[dict[str, Any]]:
    """The latest bulk export of each stream (its download address is a credential: never shown)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in store.bulk_history(limit=20):
        latest.setdefault(
            (row.source, row.stream),
            {
                "source": row.source,
                "stream": row.stream,
                "phase": row.phase,
                "status": row.status,
                "started_at": row.started_at.isoformat(),
                "finished_at": row.finished_at.isoformat() if row.finished_at else None,
                "downloaded_bytes": row.downloaded,
                "file_size": row.file_size,
                "records": int(row.counts.get("records", 0)),
                "error": row.error,
            },
        )
    return list(latest.values())


def status_rows(settings: Settings) -> dict[str, Any]:
    store = open_store(settings.database_url)
    try:
        return status_report(store)
    finally:
        store.dispose()


def history_rows(settings: Settings, mapping: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    store = open_store(settings.database_url)
    try:
        return [run_dict(r) for r in store.recent_runs(limit=limit, mapping=mapping)]
    finally:
        store.dispose()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    cells = [header, *[tuple(_cell(v) for v in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def render_status(report: dict[str, Any], *, empty_hint: str = "") -> str:
    if not report["steps"] and not report["mappings"]:
        return "no runs yet: try `audience-sync run` or `audience-sync demo`" + empty_hint
    lines = _table(
        ("step", "finished (UTC)", "outcome", "pulled", "bad", "warnings", "secs"),
        [
            (
                r["step"],
                r["finished_at"] or "running…",
                r["outcome"],
                r.get("pulled"),
                r.get("bad_records"),
                r.get("warnings"),
                r["seconds"],
            )
            for r in report["steps"]
        ],
    )
    lines.append("")
    lines += _table(
        ("mapping", "finished (UTC)", "outcome", "eligible", "added", "removed", "rejected", "secs"),
        [
            (
                r["mapping"],
                r["finished_at"] or "running…",
                r["outcome"]
                + (" (full)" if r.get("full") else "")
                + (f" (parts {r['parts_done']}/{r['parts']})" if r.get("parts") else ""),
                r["eligible"],
                r["added"],
                r["removed"],
                r["rejected"],
                r["seconds"],
            )
            for r in report["mappings"]
        ],
    )
    notes = []
    for r in report["mappings"]:
        if r["error"]:
            notes.append(f"  {r['mapping']}: {r['error']}")
        problem = r["last_problem"]
        if problem:
            what = f"{problem['rejected']} rejected" if problem["outcome"] == "partial" else problem["error"] or ""
            notes.append(
                f"  {r['mapping']}: last problem: run #{problem['run_id']} ({problem['finished_at'] or 'unfinished'})"
                f" {problem['outcome']}: {what} (`audience-sync status --history {r['mapping']}`)"
            )
        if r["rejected_now"]:
            notes.append(f"  {r['mapping']}: {r['rejected_now']} members rejected by the destination, not re-sent")
        reported = r.get("platform_report")
        if reported:
            said = [
                f"{label} {_counted(reported[key])}"
                for key, label in (
                    ("request_statuses", "requests"),
                    ("match_rate_ranges", "match rate"),
                    ("processing_errors", "processing errors"),
                )
                if key in reported
            ]
            notes.append(f"  {r['mapping']}: the platform reported on the last run: {'; '.join(said)}")
    for r in report["steps"]:
        if r["error"]:
            notes.append(f"  {r['step']}: {r['error']}")
    for c in report.get("credentials", []):
        notes.append(f"  {c['source']} tokens: {c['problem']}")
    if notes:
        lines += ["", "notes:", *notes]
    pending = [e for e in report["erasures"] if e["status"] == "pending"]
    if report["erasures"]:
        lines.append("")
        lines.append(f"erasures: {len(report['erasures'])} recorded, {len(pending)} pending")
        for e in pending:
            waiting = [m for m, p in e["mappings"].items() if p["status"] == "pending"]
            lines.append(f"  #{e['id']} ({e['email_sha256'][:12]}…): removal pending at {', '.join(waiting)}")
    exports = report.get("bulk_exports") or []
    if exports:
        lines += ["", "bulk exports (first pull / backfill):"]
        for e in exports:
            size = f" of {e['file_size']:,}" if e["file_size"] else ""
            lines.append(
                f"  {e['source']} {e['stream']}: {e['phase']} ({e['status'].lower()}), {e['downloaded_bytes']:,}{size}"
                f" bytes downloaded, {e['records']:,} records stored" + (f"; {e['error']}" if e["error"] else "")
            )
    if report["owed_syncs"]:
        owed = ", ".join(f"{o['mapping']} ({'full' if o['full'] else o['reason']})" for o in report["owed_syncs"])
        lines += ["", f"syncs owed (run by the next cycle or worker): {owed}"]
    return "\n".join(lines)


def render_history(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs recorded"
    lines = _table(
        ("run", "step", "mapping", "started (UTC)", "outcome", "pulled", "eligible", "added", "removed", "rejected"),
        [
            (
                r["run_id"],
                r["step"],
                r["mapping"] or "-",
                r["started_at"],
                r["outcome"],
                r.get("pulled"),
                r.get("eligible"),
                r.get("added"),
                r.get("removed"),
                r.get("rejected"),
            )
            for r in rows
        ],
    )
    errors = [f"  run #{r['run_id']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines + (["", "errors:", *errors] if errors else []))
