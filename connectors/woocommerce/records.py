"""WooCommerce order and customer JSON → source-neutral records.

Order statuses (WooCommerce core plus the block checkout's draft), and what each becomes:

================  =========================================  =====================================
status            meaning                                    record
================  =========================================  =====================================
processing        paid, being fulfilled                      counted
completed         paid and fulfilled                         counted
on-hold           awaiting payment confirmation (transfer)   counted (as WooCommerce Analytics does)
pending           created, never paid                        ``cancelled=True`` (not counted)
failed            payment failed or declined                 ``cancelled=True`` (not counted)
cancelled         cancelled by the shop or the customer      ``cancelled=True`` (not counted)
refunded          refunded in full                           ``cancelled=True``, total 0
trash             moved to the bin                           ``cancelled=True`` (not counted)
checkout-draft    a block checkout not yet placed            ``cancelled=True`` (not counted)
other (plugins)   e.g. ``shipped``, ``delivered``            counted, unless configured otherwise
================  =========================================  =====================================

The monetary value is the current total: ``total`` (what was charged) less every refund (WooCommerce
lists refunds beside the order with negative totals). An order whose refunds reach its total does not
count either, whatever its status says. Dates are read from the ``*_gmt`` fields only: the others are
the site's local time. A record that cannot be read raises :class:`Unreadable`, whose reason names
fields, never values.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.kernel.records import Consent, CustomerRecord, LineItem, OrderRecord, Unreadable
from connectors.kernel.records import obj as _obj

SOURCE = "woocommerce"
NOT_COUNTED = frozenset({"pending", "failed", "cancelled", "refunded", "trash", "checkout-draft"})

#: WooCommerce's order attribution (8.5+) stores the visit in these order meta keys
ATTRIBUTION = "_wc_order_attribution_"
#: consent plugins store booleans as strings; Mailchimp for WooCommerce writes "1"/"0"
CONSENT_VALUES = {
    "1": Consent.SUBSCRIBED,
    "yes": Consent.SUBSCRIBED,
    "true": Consent.SUBSCRIBED,
    "on": Consent.SUBSCRIBED,
    "subscribed": Consent.SUBSCRIBED,
    "0": Consent.NOT_SUBSCRIBED,
    "no": Consent.NOT_SUBSCRIBED,
    "false": Consent.NOT_SUBSCRIBED,
    "off": Consent.NOT_SUBSCRIBED,
    "not_subscribed": Consent.NOT_SUBSCRIBED,
    "unsubscribed": Consent.UNSUBSCRIBED,
    "pending": Consent.PENDING,
}


def order_ref(wc_id: int) -> str:
    return f"{SOURCE}:order:{wc_id}"


def customer_ref(wc_id: int) -> str:
    return f"{SOURCE}:customer:{wc_id}"


def product_ref(wc_id: int) -> str:
    return f"{SOURCE}:product:{wc_id}"


def item_id(item: Any) -> int | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_gmt(value: Any, key: str) -> datetime | None:
    """A ``*_gmt`` field (``2026-04-30T12:00:00``, no zone: it is UTC); None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Unreadable(f"bad {key}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise Unreadable(f"bad {key}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def modified_at(item: Any) -> datetime | None:
    """When an item was last changed (created, for a customer never changed); None if unreadable."""
    if not isinstance(item, dict):
        return None
    try:
        return parse_gmt(item.get("date_modified_gmt"), "date_modified_gmt") or parse_gmt(
            item.get("date_created_gmt"), "date_created_gmt"
        )
    except Unreadable:
        return None


def _text(node: Mapping[str, Any], key: str) -> str | None:
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unreadable(f"{key} is not a string")
    return value.strip() or None


def _money(value: Any, key: str) -> Decimal:
    try:
        amount = Decimal(str(value)) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise Unreadable(f"non-numeric or missing {key}")
    return amount


def meta_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """``meta_data`` as key → value (the first of repeated keys, as ``get_meta`` returns)."""
    out: dict[str, Any] = {}
    entries = item.get("meta_data") or []
    if not isinstance(entries, list):
        raise Unreadable("meta_data is not a list")
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            out.setdefault(entry["key"], entry.get("value"))
    return out


def consent_of(value: Any) -> Consent:
    """A consent plugin's stored value; anything unrecognised (or empty: "not saved yet") is UNKNOWN."""
    if isinstance(value, bool):
        return Consent.SUBSCRIBED if value else Consent.NOT_SUBSCRIBED
    if isinstance(value, int):
        return {1: Consent.SUBSCRIBED, 0: Consent.NOT_SUBSCRIBED}.get(value, Consent.UNKNOWN)
    if isinstance(value, str):
        return CONSENT_VALUES.get(value.strip().lower(), Consent.UNKNOWN)
    return Consent.UNKNOWN


def _accepts(consent: Consent) -> bool | None:
    """An order's consent as the order table keeps it: yes, no, or not known (pending is not yet a yes)."""
    if consent in (Consent.UNKNOWN, Consent.PENDING):
        return None
    return consent is Consent.SUBSCRIBED


def _label(value: Any) -> str | None:
    """An attribution value as WooCommerce shows it: ``(direct)`` → ``direct``, ``(none)`` → nothing."""
    if not isinstance(value, str):
        return None
    text = value.strip().strip("()").strip()
    return None if text in ("", "none") else text


def attribution(meta: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(channel, landing page, referrer): "source / medium" from the UTM fields, else the source type."""
    source = _label(meta.get(f"{ATTRIBUTION}utm_source"))
    medium = _label(meta.get(f"{ATTRIBUTION}utm_medium"))
    kind = _label(meta.get(f"{ATTRIBUTION}source_type"))
    if source and medium:
        channel: str | None = f"{source} / {medium}"
    else:
        channel = source or {"typein": "direct", "unknown": None}.get(kind or "", kind)
    landing = _label(meta.get(f"{ATTRIBUTION}session_entry"))
    referrer = _label(meta.get(f"{ATTRIBUTION}referrer"))
    return channel, landing, referrer


def _lines(item: Mapping[str, Any]) -> tuple[LineItem, ...]:
    entries = item.get("line_items") or []
    if not isinstance(entries, list):
        raise Unreadable("line_items is not a list")
    lines = []
    for entry in entries:
        quantity = entry.get("quantity") if isinstance(entry, dict) else None
        if isinstance(quantity, float) and quantity.is_integer():
            quantity = int(quantity)
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise Unreadable("line item without an integer quantity")
        product = entry.get("product_id")
        product_id = product_ref(product) if isinstance(product, int) and product > 0 else None
        lines.append(LineItem(product_id=product_id, sku=_text(entry, "sku"), quantity=quantity))
    return tuple(lines)


def _coupons(item: Mapping[str, Any]) -> tuple[str, ...]:
    entries = item.get("coupon_lines") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise Unreadable("coupon_lines is not a list of objects")
    return tuple(code for e in entries if (code := _text(e, "code")))


def current_total(item: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
    """(charged total, current total after refunds); refund totals come negative, taken as amounts."""
    total = _money(item.get("total"), "total")
    refunds = item.get("refunds") or []
    if not isinstance(refunds, list):
        raise Unreadable("refunds is not a list")
    refunded = sum(
        (abs(_money(r.get("total") if isinstance(r, dict) else None, "refund total")) for r in refunds), Decimal(0)
    )
    current = total - refunded
    if total >= 0 and current < 0:
        current = Decimal(0)
    return total, current


def parse_order(item: Any, *, consent_key: str | None, not_counted: Collection[str]) -> OrderRecord:
    if not isinstance(item, dict):
        raise Unreadable("item is not an object")
    wc_id = item_id(item)
    if wc_id is None:
        raise Unreadable("missing id")
    status = _text(item, "status")
    if status is None:
        raise Unreadable("missing status")
    created = parse_gmt(item.get("date_created_gmt"), "date_created_gmt")
    if created is None:
        raise Unreadable("missing date_created_gmt")
    updated = parse_gmt(item.get("date_modified_gmt"), "date_modified_gmt") or created
    currency = _text(item, "currency")
    if currency is None:
        raise Unreadable("missing currency")
    total, current = current_total(item)
    if status == "refunded" and total >= 0:
        current = Decimal(0)
    customer = item.get("customer_id")
    if customer is not None and (not isinstance(customer, int) or isinstance(customer, bool) or customer < 0):
        raise Unreadable("customer_id is not a number")
    billing = _obj(item, "billing")
    meta = meta_values(item)
    channel, landing, referrer = attribution(meta)
    consent = consent_of(meta.get(consent_key)) if consent_key and consent_key in meta else Consent.UNKNOWN
    return OrderRecord(
        order_id=order_ref(wc_id),
        source=SOURCE,
        customer_id=customer_ref(customer) if customer else None,
        email=_text(billing, "email"),
        created_at=created,
        updated_at=updated,
        total=current,
        currency=currency,
        cancelled=status in not_counted or (total > 0 and current <= 0),
        phone=_text(billing, "phone"),
        discount_codes=_coupons(item),
        lines=_lines(item),
        channel=channel,
        landing_page=landing,
        referrer=referrer,
        accepts_marketing=_accepts(consent),
    )


def parse_customer(item: Any, *, consent_key: str | None) -> CustomerRecord:
    if not isinstance(item, dict):
        raise Unreadable("item is not an object")
    wc_id = item_id(item)
    if wc_id is None:
        raise Unreadable("missing id")
    updated = parse_gmt(item.get("date_modified_gmt"), "date_modified_gmt") or parse_gmt(
        item.get("date_created_gmt"), "date_created_gmt"
    )
    if updated is None:
        raise Unreadable("missing date_modified_gmt and date_created_gmt")
    billing = _obj(item, "billing")
    shipping = _obj(item, "shipping")
    meta = meta_values(item)
    consent = consent_of(meta.get(consent_key)) if consent_key and consent_key in meta else Consent.UNKNOWN
    return CustomerRecord(
        customer_id=customer_ref(wc_id),
        source=SOURCE,
        email=_text(item, "email") or _text(billing, "email"),
        updated_at=updated,
        email_consent=consent,
        phone=_text(billing, "phone"),
        first_name=_text(item, "first_name") or _text(billing, "first_name"),
        last_name=_text(item, "last_name") or _text(billing, "last_name"),
        country=_text(billing, "country") or _text(shipping, "country"),
    )
