"""Validation and normalization of pulled records, shared by every source and the CSV path.

One rule set decides what is usable: a guest order needs a valid email (it is keyed by it); a
registered customer's order with a bad email keeps the order and drops only the email; an order
with a negative total or an unknown currency cannot be valued and is not stored. Every decision
that changes or drops data is returned as a problem, so a run reports it instead of hiding it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connectors.kernel.bulk import ChildLine
from connectors.kernel.identifiers import normalize_email, normalize_name, normalize_phone
from connectors.kernel.records import CustomerRecord, OrderRecord
from worker.currencies import ISO_4217
from worker.schema_fit import fit_row
from worker.store import schema

DUPLICATE = "duplicate id in the same batch: kept the latest copy (newest updatedAt, then the later one)"


@dataclass
class Validated:
    orders: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    #: (ref, reason): the record was not stored
    rejected: list[tuple[str, str]] = field(default_factory=list)
    #: (ref, reason): stored, with a field cleared
    warnings: list[tuple[str, str]] = field(default_factory=list)


def _order_problem(order: OrderRecord, email: str | None) -> str | None:
    if order.total < 0:
        return "negative total"
    if order.currency.upper() not in ISO_4217:
        return f"unknown currency {order.currency[:8]!r}"
    if order.customer_id is None and email is None:
        return "guest order without a valid email" if order.email else "order has neither customer id nor email"
    return None


def latest_copies(records: Iterable[OrderRecord | CustomerRecord], key: str, out: Validated) -> list[Any]:
    """One record per id: the newest ``updated_at`` (the later one on a tie); each duplicate reported."""
    latest: dict[str, Any] = {}
    for record in records:
        ident = getattr(record, key)
        if ident in latest:
            out.warnings.append((ident, DUPLICATE))
            if record.updated_at < latest[ident].updated_at:
                continue
            del latest[ident]  # re-inserted below: keeps the batch order of the copy that won
        latest[ident] = record
    return list(latest.values())


def _fitted(table: Any, row: dict[str, Any], ref: str, keys: tuple[str, ...], out: Validated) -> dict[str, Any] | None:
    fitted = fit_row(table, row, keys=keys)
    out.warnings.extend((ref, w) for w in fitted.warnings)
    if fitted.row is None:
        out.rejected.append((ref[:200], fitted.reason or "cannot be stored"))
    return fitted.row


def validate_orders(orders: Iterable[OrderRecord], into: Validated | None = None) -> Validated:
    out = into or Validated()
    for order in latest_copies(orders, "order_id", out):
        email = normalize_email(order.email)
        problem = _order_problem(order, email)
        if problem:
            out.rejected.append((order.order_id, problem))
            continue
        if order.email and email is None:
            out.warnings.append((order.order_id, "invalid email ignored; order kept for its customer"))
        row = _fitted(
            schema.orders,
            {
                "order_id": order.order_id,
                "source": order.source,
                "customer_id": order.customer_id,
                "email": email,
                "created_at": order.created_at,
                "updated_at": order.updated_at,
                "total": float(order.total),
                "currency": order.currency.upper(),
                "cancelled": order.cancelled,
                "test": order.test,
                "has_discount": bool(order.discount_codes),
                "channel": order.channel,
                "landing_page": order.landing_page,
                "referrer": order.referrer,
                "accepts_marketing": order.accepts_marketing,
            },
            order.order_id,
            ("order_id", "customer_id"),
            out,
        )
        if row is None:
            continue
        out.orders.append(row)
        for n, li in enumerate(order.lines):
            line = _fitted(
                schema.order_lines,
                {
                    "order_id": row["order_id"],
                    "line_no": n,
                    "product_id": li.product_id,
                    "sku": li.sku,
                    "quantity": li.quantity,
                },
                f"{order.order_id} line {n + 1}",
                ("order_id",),
                out,
            )
            if line is not None:
                out.lines.append(line)
    return out


def validate_customers(
    customers: Iterable[CustomerRecord], default_region: str = "US", into: Validated | None = None
) -> Validated:
    out = into or Validated()
    for customer in latest_copies(customers, "customer_id", out):
        email = normalize_email(customer.email)
        if customer.email and email is None:
            out.warnings.append((customer.customer_id, "invalid email ignored"))
        phone = normalize_phone(customer.phone, default_region)
        if customer.phone and phone is None:
            out.warnings.append((customer.customer_id, "invalid phone ignored"))
        row = _fitted(
            schema.customers,
            {
                "customer_id": customer.customer_id,
                "source": customer.source,
                "email": email,
                "phone": phone,
                "first_name": normalize_name(customer.first_name) and customer.first_name,
                "last_name": normalize_name(customer.last_name) and customer.last_name,
                "country": (customer.country or None) and customer.country.upper()[:2],
                "email_consent": customer.email_consent.value,
                "consent_updated_at": customer.consent_updated_at,
                "updated_at": customer.updated_at,
            },
            customer.customer_id,
            ("customer_id",),
            out,
        )
        if row is not None:
            out.customers.append(row)
    return out


def validate_staged_lines(
    children: Iterable[ChildLine],
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Line items of a bulk export, fitted for staging, as the paged path fits them; returns
    (rows, (ref, reason) of refused ones, (ref, warning) of fitted ones)."""
    rows: list[dict[str, Any]] = []
    refused: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    for child in children:
        fitted = fit_row(
            schema.bulk_lines,
            {
                "line_key": child.key,
                "parent_id": child.parent_id,
                "product_id": child.line.product_id,
                "sku": child.line.sku,
                "quantity": child.line.quantity,
            },
            keys=("line_key", "parent_id"),
        )
        ref = f"{child.parent_id[:150]} line {child.key[:40]}"
        if fitted.row is None:
            refused.append((ref, fitted.reason or "cannot be stored"))
        else:
            rows.append(fitted.row)
            warnings += [(ref, warning) for warning in fitted.warnings]
    return rows, refused, warnings
