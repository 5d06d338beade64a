"""Admin GraphQL nodes (as pages and the bulk export's JSONL lines carry them) into our records.

A node that cannot be used raises :class:`Unreadable` with a reason that names fields, never
values, so the caller can report it as a problem without putting PII into a run row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.kernel.records import Consent, CustomerRecord, LineItem, OrderRecord, Unreadable, obj


def _text(node: dict[str, Any], key: str) -> str | None:
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unreadable(f"{key} is not a string")
    return value or None


def _time(node: dict[str, Any], key: str, *, required: bool) -> datetime | None:
    value = node.get(key)
    if value is None:
        if required:
            raise Unreadable(f"missing {key}")
        return None
    if not isinstance(value, str):
        raise Unreadable(f"bad {key}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise Unreadable(f"bad {key}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _required_time(node: dict[str, Any], key: str) -> datetime:
    ts = _time(node, key, required=True)
    assert ts is not None
    return ts


def _gid(node: dict[str, Any]) -> str:
    gid = node.get("id")
    if not isinstance(gid, str) or not gid:
        raise Unreadable("missing id")
    return gid


def parse_customer(node: Any) -> CustomerRecord:
    if not isinstance(node, dict):
        raise Unreadable("node is not an object")
    email = obj(node, "defaultEmailAddress")
    state = email.get("marketingState")
    consent = Consent(state) if isinstance(state, str) and state in Consent.__members__ else Consent.UNKNOWN
    return CustomerRecord(
        customer_id=_gid(node),
        source="shopify",
        email=_text(email, "emailAddress"),
        updated_at=_required_time(node, "updatedAt"),
        email_consent=consent,
        consent_updated_at=_time(email, "marketingUpdatedAt", required=False),
        phone=_text(obj(node, "defaultPhoneNumber"), "phoneNumber"),
        first_name=_text(node, "firstName"),
        last_name=_text(node, "lastName"),
        country=_text(obj(node, "defaultAddress"), "countryCodeV2"),
    )


def parse_line(item: Any) -> LineItem:
    quantity = item.get("quantity") if isinstance(item, dict) else None
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise Unreadable("line item without an integer quantity")
    return LineItem(product_id=_text(obj(item, "product"), "id"), sku=_text(item, "sku"), quantity=quantity)


def parse_lines(connection: dict[str, Any]) -> list[LineItem]:
    return [parse_line(item) for item in connection.get("nodes") or []]


def parse_order(node: Any) -> OrderRecord:
    if not isinstance(node, dict):
        raise Unreadable("node is not an object")
    money = obj(obj(node, "currentTotalPriceSet"), "shopMoney")
    try:
        total = Decimal(str(money["amount"]))
    except (KeyError, InvalidOperation):
        raise Unreadable("non-numeric or missing currentTotalPriceSet amount") from None
    if not total.is_finite():
        raise Unreadable("non-numeric currentTotalPriceSet amount")
    currency = _text(money, "currencyCode")
    if currency is None:
        raise Unreadable("missing currency code")
    lines = parse_lines(obj(node, "lineItems"))
    codes = node.get("discountCodes") or []
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise Unreadable("discountCodes is not a list of strings")
    visit = obj(obj(node, "customerJourneySummary"), "firstVisit")
    utm = obj(visit, "utmParameters")
    parts = [p for p in (_text(utm, "source"), _text(utm, "medium")) if p]
    channel = " / ".join(parts) if parts else _text(visit, "source")
    return OrderRecord(
        order_id=_gid(node),
        source="shopify",
        customer_id=_text(obj(node, "customer"), "id"),
        email=_text(node, "email"),
        created_at=_required_time(node, "createdAt"),
        updated_at=_required_time(node, "updatedAt"),
        total=total,
        currency=currency,
        cancelled=_time(node, "cancelledAt", required=False) is not None,
        test=bool(node.get("test")),
        phone=_text(node, "phone"),
        discount_codes=tuple(codes),
        lines=tuple(lines),
        channel=channel,
        landing_page=_text(visit, "landingPage"),
        referrer=_text(visit, "referrerUrl"),
    )
