"""The dry run: exactly what the next sync of a mapping would send, without sending anything.

It is the engine's own plan (the same eligibility, in-flight and erasure rules as the sync), shown as
counts and masked samples. Where a platform has a validate-only mode (Google's ``validateOnly``), the
first batch of adds is also checked there and what it would refuse is listed.
"""

from __future__ import annotations

from typing import Any

from connectors.kernel.runtime import Runtime
from worker.config import AppConfig
from worker.factory import build_destination
from worker.reconcile import masked
from worker.settings import Settings
from worker.store import Store
from worker.sync import MappingSync

SAMPLES = 5


def dry_run(
    store: Store,
    config: AppConfig,
    settings: Settings,
    runtime: Runtime,
    name: str,
    *,
    full: bool = False,
    validate: bool = True,
) -> dict[str, Any]:
    mapping = config.mapping(name)
    destination = build_destination(mapping.destination, config.destinations[mapping.destination], settings, runtime)
    try:
        plan = MappingSync(store, mapping, destination, config.options[name]).plan(full=full)
        adds, removes = plan.diff.adds, plan.diff.removes
        sample_adds = [masked(plan.desired[i].email or i) for i in adds[:SAMPLES]]
        checked: dict[str, Any] | None = None
        if validate and adds:
            answer = destination.validate(
                mapping.audience, [plan.desired[i] for i in adds[: destination.batch_size]], config.options[name]
            )
            if answer is not None:
                checked = {
                    "checked": min(len(adds), destination.batch_size),
                    "would_refuse": len(answer.rejected),
                    "reasons": sorted({r.reason for r in answer.rejected})[:SAMPLES],
                }
    finally:
        destination.close()
    return {
        "mapping": name,
        "full": full,
        "segment_size": plan.segment_size,
        "eligible": len(plan.desired),
        "ineligible": dict(plan.ineligible),
        "adds": len(adds),
        "removes": len(removes),
        "of_which_erasures": len(set(removes) & set(plan.erased)),
        "refreshes": plan.refreshed,
        "skipped_rejected": plan.skipped_rejected,
        "add_samples": sample_adds,
        "remove_samples": [masked(i) for i in removes[:SAMPLES]],
        "platform_check": checked,
    }


def render_dry_run(report: dict[str, Any]) -> str:
    lines = [
        f"{report['mapping']} (dry run{', full' if report['full'] else ''}: nothing sent): "
        f"would add {report['adds']:,} and remove {report['removes']:,} "
        f"({report['eligible']:,} eligible of {report['segment_size']:,} in the segment)"
    ]
    if report["add_samples"]:
        lines.append(f"  adds, e.g.: {', '.join(report['add_samples'])}")
    if report["remove_samples"]:
        lines.append(f"  removes, e.g.: {', '.join(report['remove_samples'])}")
    if report["of_which_erasures"]:
        lines.append(f"  {report['of_which_erasures']} of the removals are erased people")
    if report["ineligible"]:
        lines.append("  not eligible: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report["ineligible"].items())))
    check = report["platform_check"]
    if check is not None:
        lines.append(f"  the platform checked {check['checked']:,} adds: it would refuse {check['would_refuse']:,}")
        lines += [f"    {reason}" for reason in check["reasons"]]
    return "\n".join(lines)
