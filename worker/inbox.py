"""Processing the store-webhook inbox, and the small cycle a webhook triggers.

Deliveries are read in arrival order, parsed into the records the pull builds
(:mod:`connectors.shopify.webhook_payloads`), validated by the pull's rules and stored by its
:func:`~worker.pull.store_page` (the newest ``updated_at`` wins: an older or repeated delivery changes
nothing). Problems are counted and reported in a ``webhook`` run row, as a pull's are. Each delivery
is then marked processed with its outcome and its payload cleared. Records of erased people are
dropped. The periodic cycle drains the inbox too, so a webhook received while no worker ran is
processed by the next cycle.

:func:`webhook_cycle` is what a burst of webhooks triggers once (debounced by the caller): drain the
inbox, recompute, then sync only the mappings whose desired membership differs from what their
destination may hold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.kernel.records import Consent, CustomerRecord, OrderRecord
from connectors.kernel.runtime import Runtime
from connectors.shopify.webhook_payloads import (
    WebhookPayloadError,
    customer_from_order_payload,
    parse_consent_payload,
    parse_customer_payload,
    parse_deleted_customer,
    parse_order_payload,
)
from worker.config import AppConfig
from worker.cycle import recompute
from worker.factory import build_destination
from worker.ingest import Validated, validate_customers, validate_orders
from worker.pull import PullResult, describe_error, store_page, suppress, utc_now
from worker.settings import Settings
from worker.store import Store, schema
from worker.store.inbox import InboxRow
from worker.sync import MappingSync

log = logging.getLogger(__name__)

ORDER_TOPICS = ("orders/create", "orders/updated", "orders/cancelled")
CUSTOMER_TOPICS = ("customers/create", "customers/update")
CONSENT_TOPIC = "customers_email_marketing_consent/update"
DELETE_TOPIC = "customers/delete"
#: every store topic the control API accepts (and `audience-sync webhooks register` subscribes to)
STORE_TOPICS = (*ORDER_TOPICS, *CUSTOMER_TOPICS, DELETE_TOPIC, CONSENT_TOPIC)
BATCH = 500


@dataclass
class InboxResult:
    """What one drain of the inbox did (the ``webhook`` run row's counts)."""

    status: str = "ok"
    deliveries: int = 0
    stored: PullResult = field(default_factory=PullResult)
    consent_applied: int = 0
    deleted: int = 0
    run_id: int | None = None
    error: str | None = None

    @property
    def changed(self) -> bool:
        """Anything the segments could see: a record new or newer than stored, a consent, a deletion."""
        s = self.stored
        fresh = sum(s.new.values()) + sum(s.changed.values())
        return bool(fresh or self.consent_applied or self.deleted)

    def counts(self) -> dict[str, Any]:
        return {
            "webhooks": self.deliveries,
            **self.stored.counts(),
            "consent_applied": self.consent_applied,
            "deleted": self.deleted,
        }


@dataclass
class _Batch:
    """One batch of deliveries on its way into the store, with each delivery's outcome so far."""

    orders: list[OrderRecord] = field(default_factory=list)
    customers: list[CustomerRecord] = field(default_factory=list)
    #: customer records whose body carried no consent (2025-01+): the stored consent is kept
    no_consent: set[tuple[str, datetime]] = field(default_factory=set)
    consents: list[tuple[int, str, Consent, datetime]] = field(default_factory=list)
    deletes: list[tuple[int, str]] = field(default_factory=list)
    #: delivery row -> ids of the records it brought
    refs: dict[int, list[str]] = field(default_factory=dict)
    outcomes: dict[int, str] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _parse(batch: _Batch, row: InboxRow) -> None:
    """Parse one delivery into the batch; an unusable body is a problem and the delivery's outcome."""
    ref = f"webhook {row.webhook_id[:60]} ({row.topic})"
    try:
        body = json.loads(row.payload)
        if row.topic in ORDER_TOPICS:
            order = parse_order_payload(body)
            batch.orders.append(order)
            batch.refs[row.id] = [order.order_id]
            customer = customer_from_order_payload(body)
            if customer is not None:
                batch.customers.append(customer)
        elif row.topic in CUSTOMER_TOPICS:
            record = parse_customer_payload(body)
            if not isinstance(body.get("email_marketing_consent"), dict):
                batch.no_consent.add((record.customer_id, record.updated_at))
            batch.customers.append(record)
            batch.refs[row.id] = [record.customer_id]
        elif row.topic == CONSENT_TOPIC:
            update = parse_consent_payload(body)
            batch.consents.append(
                (row.id, update.customer_id, update.email_consent, update.consent_updated_at or row.received_at)
            )
        elif row.topic == DELETE_TOPIC:
            batch.deletes.append((row.id, parse_deleted_customer(body)))
        else:
            raise WebhookPayloadError("topic not handled")
    except WebhookPayloadError as exc:
        batch.problems.append((ref, f"webhook body not usable: {exc.reason}"))
        batch.outcomes[row.id] = f"rejected: {exc.reason}"
    except ValueError:
        batch.problems.append((ref, "webhook body not usable: not JSON"))
        batch.outcomes[row.id] = "rejected: not JSON"


def _keep_stored_consent(store: Store, batch: _Batch) -> None:
    """A ``customers/*`` body has no consent since 2025-01: the record keeps the stored one (the
    separate consent topic and the pull bring changes), rather than overwriting it with UNKNOWN."""
    ids = [cid for cid, _ in batch.no_consent]
    if not ids:
        return
    stored = store.stored_consents(ids)
    kept = []
    for record in batch.customers:
        held = stored.get(record.customer_id)
        if (record.customer_id, record.updated_at) in batch.no_consent and held is not None:
            state = Consent(held[0]) if held[0] in Consent.__members__ else Consent.UNKNOWN
            record = dataclasses.replace(record, email_consent=state, consent_updated_at=held[1])
        kept.append(record)
    batch.customers = kept


def _store_batch(store: Store, settings: Settings, batch: _Batch, result: InboxResult, run_id: int) -> None:
    _keep_stored_consent(store, batch)
    checked = Validated()
    validate_customers(batch.customers, settings.default_phone_region, into=checked)
    validate_orders(batch.orders, into=checked)
    wanted = {r["order_id"] for r in checked.orders} | {r["customer_id"] for r in checked.customers}
    hashes, erased_ids = store.suppressed()
    if hashes or erased_ids:
        result.stored.suppressed += suppress(checked, hashes, erased_ids)
    kept = {r["order_id"] for r in checked.orders} | {r["customer_id"] for r in checked.customers}
    before = store.known_versions(schema.orders, "order_id", [r["order_id"] for r in checked.orders])
    versions = {r["order_id"]: r["updated_at"] for r in checked.orders}
    refused = store_page(store, checked, result.stored)
    rejected = dict(checked.rejected + refused)
    problems = batch.problems + checked.rejected + refused
    store.add_problems(run_id, "shopify", problems + [(r, f"warning: {w}") for r, w in checked.warnings])
    result.stored.rejected += len(problems)
    result.stored.warnings += len(checked.warnings)
    for row_id, refs in batch.refs.items():
        ident = refs[0]
        if ident in rejected:
            batch.outcomes[row_id] = f"rejected: {rejected[ident]}"[:200]
        elif ident in wanted and ident not in kept:
            batch.outcomes[row_id] = "dropped: the person was erased"
        elif ident in before and ident in versions and (before[ident] > versions[ident]):
            batch.outcomes[row_id] = "stale: older than the stored version"
        else:
            batch.outcomes.setdefault(row_id, "stored")
    for row_id, customer_id, state, at in batch.consents:
        if customer_id in erased_ids:
            batch.outcomes[row_id] = "dropped: the person was erased"
            continue
        outcome = store.apply_consent(customer_id, state.value, at)
        result.consent_applied += outcome == "applied"
        batch.outcomes[row_id] = f"consent {outcome}"
    for row_id, customer_id in batch.deletes:
        deleted = store.delete_customer(customer_id)
        result.deleted += deleted
        batch.outcomes[row_id] = "customer deleted" if deleted else "customer not held"


def process_inbox(
    store: Store, settings: Settings, *, task_id: str | None = None, deadline: float | None = None
) -> InboxResult:
    """Drain the inbox: every unprocessed delivery stored by the pull's rules, then marked processed
    with its payload cleared. No run row when nothing was pending."""
    result = InboxResult()
    rows = store.inbox_pending(BATCH)
    if not rows:
        return result
    store.mark_interrupted("webhook", None)
    run_id = result.run_id = store.start_run("webhook", None, task_id)
    started = time.monotonic()
    try:
        while rows:
            batch = _Batch()
            for row in rows:
                _parse(batch, row)
            _store_batch(store, settings, batch, result, run_id)
            store.inbox_settle([(row.id, batch.outcomes.get(row.id, "stored")) for row in rows])
            result.deliveries += len(rows)
            if deadline is not None and time.monotonic() >= deadline:
                break
            rows = store.inbox_pending(BATCH, after=rows[-1].id)
    except Exception as exc:  # a database error, or a bug: the run says so; the rows stay pending
        result.status, result.error = "failed", describe_error(exc)
        log.error("webhook processing failed: %s", result.error)
    result.stored.seconds = time.monotonic() - started
    if result.status == "ok" and result.stored.rejected:
        result.status = "partial"
    store.finish_run(run_id, result.status, result.counts(), result.error)
    return result


Sync = Callable[[str], object]


@dataclass
class WebhookCycle:
    inbox: InboxResult
    recomputed: bool = False
    synced: list[str] = field(default_factory=list)


def changed_mappings(store: Store, config: AppConfig, settings: Settings, runtime: Runtime, now: datetime) -> list[str]:
    """Mappings whose next sync would send something (the sync's own plan, computed without sending),
    or that have a sync owed; paused ones wait for their time."""
    owed = {r.mapping for r in store.owed_syncs()}
    names = []
    for name, mapping in config.mappings.items():
        if store.paused_until(name, now) is not None:
            continue
        if name in owed:
            names.append(name)
            continue
        destination = build_destination(
            mapping.destination, config.destinations[mapping.destination], settings, runtime
        )
        try:
            plan = MappingSync(store, mapping, destination, config.options[name]).plan()
        finally:
            destination.close()
        if plan.diff.adds or plan.diff.removes:
            names.append(name)
    return names


def webhook_cycle(
    store: Store,
    config: AppConfig,
    settings: Settings,
    runtime: Runtime,
    sync: Sync,
    *,
    now: datetime | None = None,
    task_id: str | None = None,
) -> WebhookCycle:
    """Drain the inbox; when that changed anything, recompute and sync only the mappings that need it."""
    outcome = WebhookCycle(process_inbox(store, settings, task_id=task_id))
    if not outcome.inbox.changed:
        return outcome
    now = now or utc_now()
    recompute(store, config, now, task_id=task_id)
    outcome.recomputed = True
    for name in changed_mappings(store, config, settings, runtime, now):
        sync(name)
        outcome.synced.append(name)
    return outcome
