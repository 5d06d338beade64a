"""The Shopify emulator's webhook side: ``webhookSubscriptionCreate`` and ``webhookSubscriptions``, and
the deliveries a shop sends (REST JSON bodies, signed as Shopify signs them).

Installed on an emulator through its hooks (``emulator.mutations`` / ``emulator.root_fields``), as the
bulk exports are. As Shopify answers: the endpoint is the input's ``uri`` (``callbackUrl`` is
deprecated), an HTTPS address (plain HTTP only to a loopback host, for local runs); a second
subscription of the same topic to the same address is refused with a user error ("Address for this
topic has already been taken"); ``webhookSubscriptions`` filters by ``topics`` and ``uri``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from connectors.shopify.synthetic import Node, iso

if TYPE_CHECKING:
    from connectors.shopify.emulator import ShopifyEmulator

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class WebhookSubscriptions:
    """The shop's webhook subscriptions, kept in memory."""

    def __init__(self) -> None:
        self.subscriptions: list[Node] = []
        self._ids = itertools.count(1_000_001)
        self._lock = threading.Lock()

    def install(self, emulator: ShopifyEmulator) -> WebhookSubscriptions:
        emulator.mutations["webhookSubscriptionCreate"] = self.create
        emulator.root_fields["webhookSubscriptions"] = self.listed
        return self

    def create(self, args: dict[str, Any]) -> Node:
        topic = str(args.get("topic") or "")
        given = args.get("webhookSubscription") or {}
        uri = str(given.get("uri") or given.get("callbackUrl") or "")
        parts = urlsplit(uri)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
            return _refused("uri", "Address protocol http:// is not supported" if uri else "Address can't be blank")
        with self._lock:
            if any(s["topic"] == topic and s["uri"] == uri for s in self.subscriptions):
                return _refused("callbackUrl", "Address for this topic has already been taken")
            n = next(self._ids)
            now = iso(datetime.now(UTC))
            node: Node = {
                "id": f"gid://shopify/WebhookSubscription/{n}",
                "legacyResourceId": str(n),
                "topic": topic,
                "uri": uri,
                "callbackUrl": uri,
                "format": given.get("format") or "JSON",
                "includeFields": list(given.get("includeFields") or []),
                "metafieldNamespaces": list(given.get("metafieldNamespaces") or []),
                "filter": given.get("filter"),
                "name": given.get("name"),
                "apiVersion": {"handle": "2026-04", "displayName": "2026-04", "supported": True},
                "createdAt": now,
                "updatedAt": now,
            }
            self.subscriptions.append(node)
        return {"webhookSubscription": node, "userErrors": []}

    def listed(self, args: dict[str, Any]) -> list[Node]:
        topics = set(args.get("topics") or [])
        uri = args.get("uri") or args.get("callbackUrl")
        with self._lock:
            return [
                s
                for s in self.subscriptions
                if (not topics or s["topic"] in topics) and (uri is None or s["uri"] == uri)
            ]


def _refused(field: str, message: str) -> Node:
    return {"webhookSubscription": None, "userErrors": [{"field": ["webhookSubscription", field], "message": message}]}


# -- deliveries ---------------------------------------------------------------------------------------
def sign(body: bytes, secret: str) -> str:
    """``X-Shopify-Hmac-Sha256``: base64(HMAC-SHA256(body, the app's client secret))."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _legacy(gid: str) -> int:
    return int(gid.rsplit("/", 1)[1])


def rest_customer(customer: Node) -> Node:
    """A synthetic customer as a 2026-04 ``customers/*`` body (no consent: removed in 2025-01)."""
    email = customer.get("defaultEmailAddress") or {}
    phone = customer.get("defaultPhoneNumber") or {}
    address = customer.get("defaultAddress") or {}
    return {
        "id": _legacy(customer["id"]),
        "admin_graphql_api_id": customer["id"],
        "email": email.get("emailAddress"),
        "phone": phone.get("phoneNumber"),
        "first_name": customer.get("firstName"),
        "last_name": customer.get("lastName"),
        "created_at": customer.get("createdAt"),
        "updated_at": customer.get("updatedAt"),
        "default_address": {"country_code": address.get("countryCodeV2")} if address else None,
    }


def rest_order(order: Node) -> Node:
    """A synthetic order as an ``orders/*`` body (REST JSON, as Shopify delivers it)."""
    money = order["currentTotalPriceSet"]["shopMoney"]
    customer = order.get("customer")
    lines = (order.get("lineItems") or {}).get("nodes") or []
    return {
        "id": _legacy(order["id"]),
        "admin_graphql_api_id": order["id"],
        "name": order.get("name"),
        "email": order.get("email"),
        "phone": order.get("phone"),
        "created_at": order["createdAt"],
        "updated_at": order["updatedAt"],
        "cancelled_at": order.get("cancelledAt"),
        "test": bool(order.get("test")),
        "currency": money["currencyCode"],
        "current_total_price": money["amount"],
        "current_total_price_set": {
            "shop_money": {"amount": money["amount"], "currency_code": money["currencyCode"]},
            "presentment_money": {"amount": money["amount"], "currency_code": money["currencyCode"]},
        },
        "discount_codes": [
            {"code": c, "amount": "0.00", "type": "percentage"} for c in order.get("discountCodes") or []
        ],
        "line_items": [
            {
                "id": _legacy(li["id"]),
                "product_id": _legacy(li["product"]["id"]) if li.get("product") else None,
                "sku": li.get("sku"),
                "quantity": li["quantity"],
            }
            for li in lines
        ],
        "customer": rest_customer(customer) if customer else None,
        "landing_site": None,
        "referring_site": None,
        "source_name": "web",
    }


def new_order(customer: Node, number: int, created: datetime, cents: int = 4200) -> Node:
    """An ``orders/create`` body for a new order of ``customer`` placed at ``created``."""
    email = (customer.get("defaultEmailAddress") or {}).get("emailAddress")
    amount = f"{cents / 100:.2f}"
    gid = f"gid://shopify/Order/{number}"
    return rest_order(
        {
            "id": gid,
            "name": f"#{number}",
            "email": email,
            "createdAt": iso(created),
            "updatedAt": iso(created),
            "cancelledAt": None,
            "currentTotalPriceSet": {"shopMoney": {"amount": amount, "currencyCode": "USD"}},
            "customer": {**customer, "updatedAt": iso(created)},
            "lineItems": {"nodes": [{"id": f"gid://shopify/LineItem/{number * 10}", "sku": "SKU-1", "quantity": 1}]},
        }
    )
