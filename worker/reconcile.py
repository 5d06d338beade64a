"""Drift check and repair: what a destination really holds against what we acknowledged.

Where a platform lets us read an audience back (Mailchimp segment members, Klaviyo list profiles, the
file destination), ``reconcile`` lists the members missing there (acknowledged, not held: someone
removed them by hand) and the extra ones (held, not acknowledged: added by hand, or by a tool we do not
know). ``--repair`` fixes both sides through the normal engine: a missing member's acknowledgement is
forgotten, so the next diff adds them again if they are still desired; an extra member who is desired
is acknowledged as held, and one who is not is recorded as possibly held (an in-flight add), so the
diff removes them. Platforms that cannot list an audience (Meta, Google, TikTok) are said to be so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.kernel.redact import mask_email
from connectors.kernel.runtime import Runtime
from worker.config import AppConfig
from worker.cycle import sync_mapping
from worker.factory import build_destination
from worker.settings import Settings
from worker.store import Store
from worker.sync import MappingSync

SAMPLES = 5


def masked(identity: str) -> str:
    """An identity for a report: an address masked, a hash shortened."""
    if "@" in identity:
        return mask_email(identity)
    return identity[:16] + "…" if len(identity) > 16 else identity


@dataclass
class Drift:
    mapping: str
    readable: bool
    missing: set[str] = field(default_factory=set)
    extra: set[str] = field(default_factory=set)
    note: str = ""
    #: after a repair: the drift left (None when no repair ran)
    after: Drift | None = None
    sync: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mapping": self.mapping,
            "readable": self.readable,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "missing_samples": [masked(i) for i in sorted(self.missing)[:SAMPLES]],
            "extra_samples": [masked(i) for i in sorted(self.extra)[:SAMPLES]],
            "note": self.note,
        }
        if self.after is not None:
            out["after_repair"] = self.after.to_dict()
            out["sync"] = self.sync
        return out

    def render(self) -> str:
        if not self.readable:
            return f"{self.mapping}: {self.note}"
        lines = [
            f"{self.mapping}: {len(self.missing)} missing at the destination, {len(self.extra)} extra there"
            + ("" if self.missing or self.extra else " (no drift)")
        ]
        if self.missing:
            lines.append(
                f"  missing (acknowledged, not held): {', '.join(masked(i) for i in sorted(self.missing)[:SAMPLES])}"
            )
        if self.extra:
            lines.append(
                f"  extra (held, not acknowledged): {', '.join(masked(i) for i in sorted(self.extra)[:SAMPLES])}"
            )
        if self.after is not None:
            sync = self.sync or {}
            lines.append(
                f"  repaired: re-added {sync.get('added', 0)}, removed {sync.get('removed', 0)} ({sync.get('status')});"
                f" now {len(self.after.missing)} missing, {len(self.after.extra)} extra"
            )
        return "\n".join(lines)


def check(store: Store, config: AppConfig, settings: Settings, runtime: Runtime, name: str) -> Drift:
    mapping = config.mapping(name)
    destination = build_destination(mapping.destination, config.destinations[mapping.destination], settings, runtime)
    try:
        if not destination.readable:
            return Drift(
                name,
                readable=False,
                note=f"{destination.kind} cannot list an audience's members, so drift cannot be checked there; "
                "`resync --full` re-sends everyone desired (a native replace where the platform has one)",
            )
        held = destination.members(mapping.audience, config.options[name])
    finally:
        destination.close()
    acknowledged = set(store.acknowledged(name))
    return Drift(name, readable=True, missing=acknowledged - held, extra=held - acknowledged)


def reconcile(
    store: Store,
    config: AppConfig,
    settings: Settings,
    runtime: Runtime,
    name: str,
    *,
    repair: bool = False,
    now: datetime | None = None,
) -> Drift:
    drift = check(store, config, settings, runtime, name)
    if not repair or not drift.readable or not (drift.missing or drift.extra):
        return drift
    mapping = config.mapping(name)
    destination = build_destination(mapping.destination, config.destinations[mapping.destination], settings, runtime)
    try:
        desired = MappingSync(store, mapping, destination, config.options[name]).plan().desired
    finally:
        destination.close()
    store.ack_removed(name, sorted(drift.missing))  # forgotten: the diff re-adds those still desired
    wanted = sorted(drift.extra & set(desired))
    store.ack_added(name, [(i, desired[i].key) for i in wanted])  # they are there, as they should be
    unwanted = sorted(drift.extra - set(desired))
    if unwanted:  # possibly held: the diff removes them
        store.begin_batch(name, None, "add", [(i, "", None) for i in unwanted])
    result = sync_mapping(store, config, settings, runtime, name, now=now)
    drift.sync = {"status": result.status, "added": result.added, "removed": result.removed}
    drift.after = check(store, config, settings, runtime, name)
    return drift
