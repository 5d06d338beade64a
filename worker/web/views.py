"""What each page and each JSON answer shows, built from stored results only (never a recompute).

One function per page; the web app renders them with a template, the JSON API returns them as they
are. Every person in them is masked (``j***@example.com``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from connectors.kernel.redact import mask_email
from connectors.kernel.vendor import destination_class
from worker.config import AppConfig
from worker.settings import Settings
from worker.status import PROBLEMS, run_dict
from worker.store import Store, schema, utcnow

PAGE = 20
SAMPLES = 5
NEAR_DUPLICATE = 0.9


class NotFound(LookupError):
    pass


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _mask(key: str) -> str:
    return mask_email(key) if "@" in key else key


def _last_sync(store: Store, mapping: str) -> dict[str, Any] | None:
    runs = store.recent_runs(limit=1, mapping=mapping)
    return run_dict(runs[0]) if runs else None


def _targeting_minimum(config: AppConfig, mapping: str) -> tuple[str, int] | None:
    dest = config.destinations[config.mappings[mapping].destination]
    minimum: tuple[str, int] | None = destination_class(dest.type).targeting_minimum
    return minimum


def _sizes(store: Store, stats: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Sizes as the last recompute stored them (counting 1M memberships costs a page its budget);
    counted when no recompute recorded any yet."""
    return {name: int(row["size"]) for name, row in stats.items()} if stats else store.segment_sizes()


def overview(store: Store, config: AppConfig) -> dict[str, Any]:
    stats = store.latest_segment_stats()
    sizes = _sizes(store, stats)
    history = store.segment_history(limit=2000)
    mappings = []
    banners: list[dict[str, str]] = []
    now = utcnow()
    for name, m in config.mappings.items():
        last = _last_sync(store, name)
        mappings.append(
            {
                "name": name,
                "segment": m.segment,
                "destination": m.destination,
                "destination_type": config.destinations[m.destination].type,
                "audience": m.audience,
                "last": last,
            }
        )
        if last and last["outcome"] == "needs_attention":
            banners.append({"kind": "attention", "mapping": name, "text": f"{name} needs a person: {last['error']}"})
        elif last and last["outcome"] in ("failed", "interrupted", "deferred"):
            banners.append(
                {"kind": "problem", "mapping": name, "text": f"{name}: last run {last['outcome']}: {last['error']}"}
            )
        paused = store.paused_until(name, now)
        if paused is not None:
            banners.append(
                {"kind": "paused", "mapping": name, "text": f"{name} is paused by the destination until {_iso(paused)}"}
            )
    pending = [e for e in store.erasures(limit=50) if e.status == "pending"]
    if pending:
        banners.append({"kind": "erasure", "mapping": "", "text": f"{len(pending)} erasure(s) pending: removals owed"})
    segments = []
    for name in sorted(set(config.segments.resolved()) | set(sizes)):
        points = [(_iso(h["at"]), h["size"]) for h in reversed(history) if h["segment"] == name][-30:]
        segments.append({"name": name, "size": sizes.get(name, 0), "history": points, "stats": _stat(stats.get(name))})
    return {"mappings": mappings, "segments": segments, "banners": banners}


def stored_preview(store: Store, config: AppConfig) -> dict[str, Any]:
    """What the last recompute stored, per segment and mapping: cheap at any size (``GET /preview``)."""
    stats = store.latest_segment_stats()
    sizes = _sizes(store, stats)
    segments = {}
    for name in sorted(set(config.segments.resolved()) | set(sizes)):
        row = stats.get(name) or {}
        overlaps = sorted(row.get("overlaps", {}).items(), key=lambda kv: -kv[1])
        segments[name] = {
            "size": sizes.get(name, 0),
            "joined": row.get("joined"),
            "left": row.get("left"),
            "revenue_share": row.get("revenue_share"),
            "overlaps": dict(overlaps[:5]),
            "warnings": [
                f"near-duplicate of {other}: they overlap {jaccard:.0%} (Jaccard)"
                for other, jaccard in overlaps
                if jaccard >= NEAR_DUPLICATE
            ],
        }
    computed = max((row["at"] for row in stats.values()), default=None)
    return {
        "computed_at": _iso(computed),
        "segments": segments,
        "mappings": {
            name: {"segment": m.segment, "destination": m.destination, "last_sync": _last_sync(store, name)}
            for name, m in config.mappings.items()
        },
    }


def _stat(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: (_iso(v) if k == "at" else v) for k, v in row.items() if k != "run_id"}


def segment_detail(store: Store, config: AppConfig, name: str) -> dict[str, Any]:
    from worker.segments.describe import describe

    definitions = config.segments.resolved()
    size = store.segment_size(name)
    if name not in definitions and not size:
        raise NotFound(f"no segment named {name!r}")
    history = store.segment_history(name, limit=60)
    latest = history[0] if history else None
    keys = store.segment_sample(name, SAMPLES * 4)
    samples = list(
        dict.fromkeys(mask_email(m.email) if m.email else _mask(m.key) for m in store.members(keys).values())
    )
    users = [n for n, m in config.mappings.items() if m.segment == name]
    warnings = []
    overlaps = sorted((latest or {}).get("overlaps", {}).items(), key=lambda kv: -kv[1])
    for other, jaccard in overlaps:
        if jaccard >= NEAR_DUPLICATE:
            warnings.append(f"near-duplicate of {other}: they overlap {jaccard:.0%} (Jaccard)")
    for mapping in users:
        minimum = _targeting_minimum(config, mapping)
        last = _last_sync(store, mapping)
        if minimum and last and last.get("eligible") is not None and last["eligible"] < minimum[1]:
            warnings.append(
                f"{mapping}: {last['eligible']:,} eligible members; {minimum[0]} needs at least {minimum[1]:,} matched"
            )
    definition = definitions.get(name)
    return {
        "name": name,
        "description": definition.description if definition else "",
        "rule": describe(definition.rule) if definition else "no longer defined: its members go at the next recompute",
        "size": size,
        "joined": latest["joined"] if latest else None,
        "left": latest["left"] if latest else None,
        "revenue_share": latest["revenue_share"] if latest else None,
        "overlaps": [{"segment": o, "jaccard": j} for o, j in overlaps[:10]],
        "samples": samples[:SAMPLES],
        "warnings": warnings,
        "mappings": users,
        "history": [{"at": _iso(h["at"]), "size": h["size"]} for h in reversed(history)],
    }


def mapping_detail(store: Store, config: AppConfig, name: str, page: int = 1) -> dict[str, Any]:
    if name not in config.mappings:
        raise NotFound(f"no mapping named {name!r}")
    m = config.mappings[name]
    runs = runs_page(store, mapping=name, page=page)
    rejected = [
        {
            "customer": _mask(str(r["customer_key"])),
            "operation": r["operation"],
            "code": r["code"],
            "reason": r["reason"],
        }
        for r in list(store.rejected(name).values())[:50]
    ]
    dest = config.destinations[m.destination]
    cls = destination_class(dest.type)
    return {
        "name": name,
        "segment": m.segment,
        "destination": m.destination,
        "destination_type": dest.type,
        "audience": m.audience,
        "mode": m.mode,
        "supports_replace": bool(cls.supports_replace),
        "acknowledged": len(store.acknowledged(name)),
        "rejected_count": len(store.rejected(name)),
        "rejected": rejected,
        "runs": runs,
        "progress": progress(store, name),
        "owed": _owed(store, name),
    }


def _owed(store: Store, name: str) -> dict[str, Any] | None:
    owed = store.sync_request(name)
    return None if owed is None else {"full": owed.full, "reason": owed.reason, "requested_at": _iso(owed.requested_at)}


def progress(store: Store, name: str) -> dict[str, Any]:
    """The running sync's live counts (written by the worker after every batch), or the last one's."""
    runs = store.recent_runs(limit=1, mapping=name)
    if not runs:
        return {"running": False}
    run = runs[0]
    c = run.counts
    total = (
        int(c.get("pending_adds") or 0)
        + int(c.get("pending_removes") or 0)
        + int(c.get("added") or 0)
        + int(c.get("removed") or 0)
    )
    return {
        "running": run.status == "running",
        "run_id": run.id,
        "outcome": run.status,
        "sent": int(c.get("added") or 0) + int(c.get("removed") or 0) + int(c.get("rejected") or 0),
        "total": total,
        "added": c.get("added"),
        "removed": c.get("removed"),
        "rejected": c.get("rejected"),
        "retries": c.get("dest_retries", 0),
        "throttled": c.get("dest_throttled", 0),
        "waited_seconds": c.get("dest_waited_seconds", 0),
        "started_at": _iso(run.started_at),
    }


def runs_page(
    store: Store, *, step: str | None = None, mapping: str | None = None, outcome: str | None = None, page: int = 1
) -> dict[str, Any]:
    r = schema.runs.c
    conditions = []
    if step:
        conditions.append(r.kind == step)
    if mapping:
        conditions.append(r.mapping == mapping)
    if outcome == "problem":
        conditions.append(r.status.in_(PROBLEMS))
    elif outcome:
        conditions.append(r.status == outcome)
    page = max(1, page)
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(schema.runs).where(*conditions)).scalar_one())
        rows = conn.execute(
            select(schema.runs).where(*conditions).order_by(r.id.desc()).limit(PAGE).offset((page - 1) * PAGE)
        ).all()
    return {
        "page": page,
        "pages": max(1, -(-total // PAGE)),
        "total": total,
        "filters": {"step": step, "mapping": mapping, "outcome": outcome},
        "runs": [run_dict(store._run(row)) for row in rows],
    }


def erasures(store: Store) -> dict[str, Any]:
    return {"erasures": [e.to_dict() for e in store.erasures(limit=100)]}


def settings_view(settings: Settings, config: AppConfig) -> dict[str, Any]:
    """What runs where, with every secret shown only as set or not set."""
    from connectors.kernel.vendor import vendors
    from worker.secrets import read_secret

    secrets = {
        variable: read_secret(settings, variable) is not None
        for v in vendors().values()
        for variable in v.secrets.values()
    }
    return {
        "database": settings.database_url.split("@")[-1],
        "redis": settings.redis_url.split("@")[-1],
        "config": str(settings.config or "built-in sandbox config"),
        "cycle_minutes": settings.cycle_minutes,
        "destinations": {n: d.type for n, d in config.destinations.items()},
        "secrets_set": secrets,
        "roles": {
            "admin": settings.api_token is not None,
            "operator": settings.operator_token is not None,
            "viewer": settings.viewer_token is not None,
        },
    }
