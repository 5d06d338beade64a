"""What ``audience-sync erase`` prints: per mapping, whether the person was there and is gone."""

from __future__ import annotations

from worker.erasure import ErasureReport


def render_erasure(report: ErasureReport) -> str:
    request = report.request
    progress = report.progress
    digest = progress.email_sha256[:12] + "…" if progress else "?"
    if not request.created:
        state = progress.status if progress else "recorded"
        return (
            f"this address was erased before (erasure #{request.erasure_id}, {state}); nothing new was held, "
            "and it stays suppressed for later pulls"
        )
    lines = [f"erasure #{request.erasure_id} (email sha256 {digest}), audit keeps the hash only"]
    if not request.anything_held:
        lines.append(
            "  nothing was held for this address: no customer record, no order, no audience membership; "
            "it is suppressed for later pulls"
        )
        return "\n".join(lines)
    lines.append(
        f"  store: deleted {request.orders_deleted} orders and {request.customer_records} customer records; "
        "suppressed for later pulls"
    )
    for name, d in sorted(report.destinations.items()):
        held, remaining = int(d.get("held") or 0), int(d.get("remaining") or 0)
        if not held:
            lines.append(f"  {name}: was not a member")
        elif remaining == 0:
            lines.append(f"  {name}: was a member ({held} identities); removed")
        else:
            why = d.get("error") or d.get("outcome") or "not run"
            lines.append(f"  {name}: was a member; removal pending ({why}); the next sync of this mapping retries it")
    lines.append(
        "erasure complete: gone from the store and every destination"
        if report.complete
        else "erasure pending: `audience-sync status` shows its progress"
    )
    return "\n".join(lines)
