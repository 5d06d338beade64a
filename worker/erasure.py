"""Erasure: remove a person from our store and from every destination, and leave an audit record.

The person's rows are deleted, their email hash and customer ids are suppressed so a later pull
does not bring them back, and every mapping is synced so each destination removes them through
the normal acknowledged-state path. The audit row holds the email's SHA-256, never the address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.identifiers import normalize_email, sha256_hex
from connectors.runtime import Runtime
from worker.config import AppConfig
from worker.cycle import recompute, sync_mapping
from worker.settings import Settings
from worker.store import Store


class ErasureError(ValueError):
    pass


@dataclass
class ErasureReport:
    erasure_id: int
    orders_deleted: int
    customer_records: int
    #: per mapping: sync outcome and whether the person is gone from its acknowledged state
    destinations: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(d["removed"] for d in self.destinations.values())


def request_erasure(store: Store, email: str) -> tuple[int, dict[str, Any]]:
    """The store part, done at once: rows deleted, the person suppressed; destinations follow.

    Destinations drop the person at their next sync (their keys are gone from every segment),
    which is why a webhook can answer quickly and leave the removals to the workers.
    """
    normalized = normalize_email(email)
    if normalized is None:
        raise ErasureError("not a valid email address")
    return store.erase_person(normalized, sha256_hex(normalized))


def erase(
    store: Store, config: AppConfig, settings: Settings, runtime: Runtime, email: str, now: datetime
) -> ErasureReport:
    """Erase and push the removal to every destination now; completes the audit row."""
    erasure_id, detail = request_erasure(store, email)
    keys = set(detail["keys"])
    recompute(store, config, now)
    report = ErasureReport(erasure_id, int(detail["orders_deleted"]), len(detail["customer_ids"]))
    for name in config.mappings:
        result = sync_mapping(store, config, settings, runtime, name, now=now, full=False)
        still_there = [k for k in store.acknowledged(name).values() if k in keys]
        report.destinations[name] = {"outcome": result.status, "removed": not still_there}
    if report.complete:
        store.complete_erasure(
            erasure_id,
            {
                "orders_deleted": report.orders_deleted,
                "customer_ids": detail["customer_ids"],
                "destinations": report.destinations,
            },
        )
    return report
