"""Erasure and data requests: one durable path for the CLI, the control API and Shopify's webhooks.

Requesting an erasure changes the store at once (see :mod:`worker.store.privacy`): nothing about the
person is kept but the email's SHA-256 and customer ids, which keep them out of later pulls. Their
removal from each destination is owed in the store and done by that mapping's normal sync, whichever
process runs it next; :func:`erase_now` runs those removals here (the CLI, and the sandbox).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from connectors.kernel.identifiers import normalize_email, sha256_hex
from connectors.kernel.runtime import Runtime
from worker.config import AppConfig
from worker.cycle import sync_mapping
from worker.settings import Settings
from worker.store import ErasureProgress, ErasureRequest, Store, Webhook, schema
from worker.store.snapshot import default_cache_path

log = logging.getLogger(__name__)


class ErasureError(ValueError):
    pass


def normalized_email(email: str) -> str:
    normalized = normalize_email(email)
    if normalized is None:
        raise ErasureError("not a valid email address")
    return normalized


def _forget_cached_copy(store: Store) -> None:
    """The snapshot cache beside a SQLite store holds customers' emails: it goes with the erasure,
    and so do the old pages of the database's write-ahead log and any downloaded bulk export."""
    store.flush_deleted()
    from worker.backfill import forget_files

    forget_files(store)  # and downloaded bulk exports, which hold every customer of the store
    path = default_cache_path(store.engine.url.render_as_string(hide_password=True))
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def request_erasure(
    store: Store,
    config: AppConfig,
    email: str | None,
    *,
    origin: str,
    customer_ids: tuple[str, ...] = (),
    order_ids: tuple[str, ...] = (),
    webhook: Webhook | None = None,
) -> ErasureRequest:
    """Record the erasure and delete the person's rows now; destinations follow at their next sync.

    ``email`` may be None when customer ids name the person (a webhook without an address)."""
    if email is None and not customer_ids:
        raise ErasureError("name the person by email address or customer id")
    request = store.request_erasure(
        normalized_email(email) if email is not None else None,
        mappings=config.mappings,
        origin=origin,
        customer_ids=customer_ids,
        order_ids=order_ids,
        webhook=webhook,
    )
    if request.created:
        _forget_cached_copy(store)
        log.info(
            "erasure #%s recorded (%s); removal owed by %d mappings",
            request.erasure_id,
            origin,
            sum(1 for n in request.held.values() if n),
        )
    return request


def redact_shop(store: Store, config: AppConfig, shop_domain: str, *, webhook: Webhook | None = None) -> ErasureRequest:
    request = store.redact_shop(
        sha256_hex(shop_domain.strip().lower()), mappings=config.mappings, origin="webhook", webhook=webhook
    )
    if request.created:
        _forget_cached_copy(store)
    return request


@dataclass
class ErasureReport:
    request: ErasureRequest
    #: per mapping: identities held when requested, still held now, and the removal run's outcome
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: ErasureProgress | None = None

    @property
    def complete(self) -> bool:
        return self.progress is not None and self.progress.status == "complete"


def erase_now(
    store: Store, config: AppConfig, settings: Settings, runtime: Runtime, email: str, now: datetime
) -> ErasureReport:
    """Request the erasure, then run the removals of every mapping that held the person, here."""
    request = request_erasure(store, config, email, origin="cli")
    report = ErasureReport(request)
    assert request.erasure_id is not None
    for name, held in request.held.items():
        outcome: dict[str, Any] = {"held": held, "outcome": None}
        if held and name in config.mappings:
            result = sync_mapping(store, config, settings, runtime, name, now=now, only_erasures=True)
            outcome["outcome"] = result.status
            outcome["error"] = result.error
        report.destinations[name] = outcome
    if store.settle_erasures():
        store.flush_deleted()
    report.progress = store.erasure(request.erasure_id)
    if report.progress is not None:
        for name, (_, remaining) in report.progress.mappings.items():
            report.destinations.setdefault(name, {"held": 0, "outcome": None})["remaining"] = remaining
    return report


def export_customer(store: Store, email: str) -> dict[str, Any]:
    """What we hold about a person: customer records, orders with lines, segments, destinations.

    For ``customers/data_request`` and ``audience-sync export-customer``; marks their requests done.
    """
    address = normalized_email(email)
    digest = sha256_hex(address)
    c, o, lines, a = schema.customers.c, schema.orders.c, schema.order_lines.c, schema.acknowledged.c
    with store.engine.connect() as conn:
        customers = [dict(r._mapping) for r in conn.execute(select(schema.customers).where(c.email == address))]
        ids = [r["customer_id"] for r in customers]
        keys = [address, *ids]
        orders = [
            dict(r._mapping)
            for r in conn.execute(select(schema.orders).where((o.email == address) | o.customer_id.in_(keys)))
        ]
        for order in orders:
            order["lines"] = [
                dict(r._mapping)
                for r in conn.execute(select(schema.order_lines).where(lines.order_id == order["order_id"]))
            ]
        segments = sorted(
            set(
                conn.execute(
                    select(schema.segment_members.c.segment).where(schema.segment_members.c.customer_key.in_(keys))
                ).scalars()
            )
        )
        destinations = [
            {"mapping": r.mapping, "since": r.first}
            for r in conn.execute(
                select(a.mapping, func.min(a.acked_at).label("first"))
                .where(a.customer_key.in_(keys) | a.identity.in_([address, digest]) | a.identity.like(f"%{digest}%"))
                .group_by(a.mapping)
            )
        ]
        erased = conn.execute(
            select(schema.erasures.c.id, schema.erasures.c.requested_at).where(schema.erasures.c.email_sha256 == digest)
        ).all()
    for row in customers + orders:
        row.pop("ingest_seq", None)
        row.pop("row_no", None)
    store.mark_exported(digest)
    export = {
        "email_sha256": digest,
        "customers": customers,
        "orders": orders,
        "segments": segments,
        "destinations": destinations,
        "erasures": [{"id": int(e.id), "requested_at": e.requested_at} for e in erased],
    }
    plain: dict[str, Any] = json.loads(json.dumps(export, default=str))  # datetimes as ISO text
    return plain
