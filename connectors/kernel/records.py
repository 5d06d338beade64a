"""Source-neutral records that connectors produce and consume.

Sources turn vendor payloads into :class:`OrderRecord` / :class:`CustomerRecord`; destinations receive
:class:`Member` rows. Raw values are kept as the source sent them; validation and normalization
happen in one place (``worker.ingest``) so the CSV path and every connector agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Consent(StrEnum):
    """Email marketing state, named as Shopify's ``EmailMarketingState`` (the richest source)."""

    SUBSCRIBED = "SUBSCRIBED"
    NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
    PENDING = "PENDING"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    REDACTED = "REDACTED"
    INVALID = "INVALID"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class LineItem:
    product_id: str | None
    sku: str | None
    quantity: int


@dataclass(frozen=True)
class OrderRecord:
    order_id: str
    source: str
    customer_id: str | None
    email: str | None
    created_at: datetime
    updated_at: datetime
    #: current (post-refund, post-edit) total in the shop's currency: the monetary value
    total: Decimal
    currency: str
    cancelled: bool = False
    test: bool = False
    phone: str | None = None
    discount_codes: tuple[str, ...] = ()
    lines: tuple[LineItem, ...] = ()
    #: first-visit acquisition data: "source / medium" from UTM, else the source name
    channel: str | None = None
    landing_page: str | None = None
    referrer: str | None = None
    #: only the CSV path carries consent on the order; Shopify sends it with the customer
    accepts_marketing: bool | None = None


@dataclass(frozen=True)
class CustomerRecord:
    customer_id: str
    source: str
    email: str | None
    updated_at: datetime
    email_consent: Consent = Consent.UNKNOWN
    consent_updated_at: datetime | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    country: str | None = None


# -- reading a source's JSON: shared by the sources' record parsers ------------------------------
class Unreadable(Exception):
    """An unusable node, with a reason that names fields, never values (no PII)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def obj(node: Any, key: str) -> dict[str, Any]:
    """``node[key]`` when both are JSON objects, else an empty one (a missing branch reads as empty)."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Problem:
    """A record that could not be used, with where it came from and why (never its PII)."""

    ref: str
    reason: str


@dataclass
class Page:
    """One page of a pull: usable records, the problems found, and the page's newest update time."""

    orders: list[OrderRecord] = field(default_factory=list)
    customers: list[CustomerRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    max_updated_at: datetime | None = None

    def add(self, record: OrderRecord | CustomerRecord) -> None:
        """Keep a usable record, and the page's newest update time with it."""
        if isinstance(record, OrderRecord):
            self.orders.append(record)
        else:
            self.customers.append(record)
        if self.max_updated_at is None or record.updated_at > self.max_updated_at:
            self.max_updated_at = record.updated_at


@dataclass(frozen=True)
class Member:
    """One person as a destination sees them: normalized identifiers and consent."""

    key: str
    email: str | None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    country: str | None = None
    email_consent: Consent = Consent.UNKNOWN


PROFILE_FIELDS = ("email", "phone", "first_name", "last_name", "country", "email_consent")


def _present(value: Any) -> str | None:
    """A stored identifier, or None for missing, empty and NaN (pandas' missing value is truthy)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text or None


def member_from_profile(key: str, row: Mapping[str, Any]) -> Member:
    """The one way a stored or computed profile becomes a :class:`Member` (sync, dry run, preview)."""
    consent = _present(row.get("email_consent"))
    return Member(
        key=key,
        email=_present(row.get("email")),
        phone=_present(row.get("phone")),
        first_name=_present(row.get("first_name")),
        last_name=_present(row.get("last_name")),
        country=_present(row.get("country")),
        email_consent=Consent(consent) if consent is not None and consent in Consent.__members__ else Consent.UNKNOWN,
    )
