"""The sandbox's synthetic shop (:mod:`connectors.shopify.synthetic`) rendered as WooCommerce renders it.

The same people, orders, amounts and times the Shopify emulator serves, in WooCommerce's shapes: integer
ids (customers from 1, orders from 1001), an order ``status``, ``*_gmt`` dates beside the site's local
ones, the charged ``total`` with ``refunds`` listed beside it (negative), lowercase coupon codes, order
attribution meta (``_wc_order_attribution_*``) and a consent plugin's customer meta.

Shopify's notions map to the nearest WooCommerce one: a cancelled order is ``cancelled``, one refunded
in full ``refunded``, a test order ``failed`` (WooCommerce has no test orders; neither counts), and the
rest ``completed``, with some ``processing`` and ``on-hold`` (all three count).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from connectors.shopify.synthetic import CUSTOMER_BASE, ORDER_BASE, PRODUCT_BASE, Node, SyntheticStore

JSONObj = dict[str, Any]

#: the emulated site's timezone: its local dates differ from the GMT ones, as on most real sites
SITE_OFFSET = timedelta(hours=2)
#: where the emulated consent plugin (Mailchimp for WooCommerce) keeps consent: "1" subscribed, "0" not
CONSENT_META_KEY = "mailchimp_woocommerce_is_subscribed"
PRODUCT_FIRST_ID = 10
ATTRIBUTION = "_wc_order_attribution_"
_SEARCH_ENGINES = ("google", "bing")


def customer_id(node: Node) -> int:
    return int(node["_n"]) - CUSTOMER_BASE


def order_id(node: Node) -> int:
    return int(node["_n"]) - ORDER_BASE


def product_id(gid: str) -> int:
    return int(gid.rsplit("/", 1)[1]) - PRODUCT_BASE + PRODUCT_FIRST_ID


def wc_id(node: Node) -> int:
    """A synthetic node's WooCommerce id (customers and orders number separately, as users and posts)."""
    return customer_id(node) if "/Customer/" in str(node["id"]) else order_id(node)


def wp_date(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def dates(name: str, ts: datetime | None, offset: timedelta = SITE_OFFSET) -> JSONObj:
    """``{name: local, name_gmt: GMT}`` as WooCommerce renders a date (no zone on either)."""
    if ts is None:
        return {name: None, f"{name}_gmt": None}
    return {name: wp_date(ts + offset), f"{name}_gmt": wp_date(ts)}


def amount(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def order_status(node: Node) -> str:
    if node["cancelledAt"] is not None:
        return "cancelled"
    if node["test"]:
        return "failed"
    original, current = node["_original_cents"], node["_current_cents"]
    if original is not None and original > 0 and current == 0:
        return "refunded"
    n = order_id(node)
    return "on-hold" if n % 29 == 0 else "processing" if n % 7 == 0 else "completed"


def _address(first: str, last: str, country: str, email: str | None, phone: str | None) -> JSONObj:
    address: JSONObj = {
        "first_name": first,
        "last_name": last,
        "company": "",
        "address_1": "",
        "address_2": "",
        "city": "",
        "state": "",
        "postcode": "",
        "country": country,
    }
    if email is not None:
        address["email"] = email
    if phone is not None:
        address["phone"] = phone
    return address


def _meta(owner: int, values: JSONObj) -> list[JSONObj]:
    return [{"id": owner * 100 + k, "key": key, "value": value} for k, (key, value) in enumerate(values.items())]


def render_customer(node: Node, *, offset: timedelta = SITE_OFFSET) -> JSONObj:
    n = customer_id(node)
    email_node = node["defaultEmailAddress"]
    email = email_node["emailAddress"] if email_node else ""
    phone = node["defaultPhoneNumber"]["phoneNumber"] if node["defaultPhoneNumber"] else ""
    country = node["defaultAddress"]["countryCodeV2"] if node["defaultAddress"] else ""
    first, last = node["firstName"] or "", node["lastName"] or ""
    meta: JSONObj = {}
    if email_node:
        meta[CONSENT_META_KEY] = "1" if email_node["marketingState"] == "SUBSCRIBED" else "0"
    return {
        "id": n,
        **dates("date_created", node["_created"], offset),
        **dates("date_modified", node["_updated"], offset),
        "email": email,
        "first_name": first,
        "last_name": last,
        "role": "customer",
        "username": f"customer{n}",
        "billing": _address(first, last, country, email, phone),
        "shipping": _address(first, last, country, None, ""),
        "is_paying_customer": node["_kind"] != "none",
        "avatar_url": "https://secure.gravatar.com/avatar/?s=96&d=mm&r=g",
        "meta_data": _meta(n, meta),
    }


def attribution_meta(journey: Node | None) -> JSONObj:
    """A first visit as WooCommerce's order attribution records it (it skips ``(none)`` values)."""
    visit = (journey or {}).get("firstVisit")
    if not visit:
        return {}
    utm = visit.get("utmParameters")
    referrer = visit.get("referrerUrl")
    meta: JSONObj = {}
    if utm:
        meta = {"source_type": "utm", "utm_source": utm["source"], "utm_medium": utm["medium"]}
        if utm.get("campaign"):
            meta["utm_campaign"] = utm["campaign"]
    elif visit.get("source") in _SEARCH_ENGINES and referrer:
        meta = {"source_type": "organic", "utm_source": visit["source"], "utm_medium": "organic"}
    elif referrer:
        meta = {"source_type": "referral", "utm_source": urlsplit(referrer).hostname, "utm_medium": "referral"}
    else:
        meta = {"source_type": "typein", "utm_source": "(direct)"}
    if referrer:
        meta["referrer"] = referrer
    if visit.get("landingPage"):
        meta["session_entry"] = visit["landingPage"]
    return {f"{ATTRIBUTION}{key}": value for key, value in meta.items()}


def render_order(store: SyntheticStore, node: Node, *, offset: timedelta = SITE_OFFSET) -> JSONObj:
    n = order_id(node)
    customer = node["customer"]
    money = node["currentTotalPriceSet"]["shopMoney"]
    original, current = node["_original_cents"], node["_current_cents"]
    total = amount(original) if original is not None else str(money["amount"])
    refunds = []
    if original is not None and current < original:
        refunds.append({"id": 900_000 + n, "reason": "", "total": amount(current - original)})
    status = order_status(node)
    first = (customer["firstName"] or "") if customer else ""
    last = (customer["lastName"] or "") if customer else ""
    country = customer["defaultAddress"]["countryCodeV2"] if customer and customer["defaultAddress"] else ""
    lines = []
    for k, line in enumerate(node["lineItems"]["nodes"], start=1):
        product = store.node(line["product"]["id"])
        price = amount(product["_price"])
        lines.append(
            {
                "id": n * 100 + k,
                "name": product["title"],
                "product_id": product_id(product["id"]),
                "variation_id": 0,
                "quantity": line["quantity"],
                "tax_class": "",
                "subtotal": amount(product["_price"] * line["quantity"]),
                "total": amount(product["_price"] * line["quantity"]),
                "sku": line["sku"],
                "price": float(price),
                "meta_data": [],
            }
        )
    coupons = [
        {"id": n * 100 + 50 + k, "code": code.lower(), "discount": "0.00", "discount_tax": "0.00", "meta_data": []}
        for k, code in enumerate(node["discountCodes"])
    ]
    paid = node["_created"] if status not in ("failed", "pending") else None
    return {
        "id": n,
        "parent_id": 0,
        "number": str(n),
        "order_key": f"wc_order_{n:08x}",
        "created_via": "checkout",
        "version": "9.8.0",
        "status": status,
        "currency": money["currencyCode"],
        **dates("date_created", node["_created"], offset),
        **dates("date_modified", node["_updated"], offset),
        "total": total,
        "total_tax": "0.00",
        "prices_include_tax": False,
        "customer_id": customer_id(customer) if customer else 0,
        "customer_note": "",
        "billing": _address(first, last, country, node["email"] or "", node["phone"] or ""),
        "shipping": _address(first, last, country, None, ""),
        "payment_method": "stripe",
        "payment_method_title": "Credit card",
        "transaction_id": "",
        **dates("date_paid", paid, offset),
        **dates("date_completed", node["_updated"] if status == "completed" else None, offset),
        "meta_data": _meta(n, attribution_meta(node["customerJourneySummary"])),
        "line_items": lines,
        "tax_lines": [],
        "shipping_lines": [],
        "fee_lines": [],
        "coupon_lines": coupons,
        "refunds": refunds,
        "currency_symbol": "$" if money["currencyCode"] == "USD" else "",
    }
