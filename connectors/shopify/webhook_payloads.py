"""Shopify webhook bodies (REST JSON, API 2026-04) as the records :mod:`connectors.shopify.source` builds.

Pure functions over an already-parsed JSON body, no I/O. ``orders/create``, ``orders/updated`` and
``orders/cancelled`` -> :func:`parse_order_payload`; ``customers/create`` and ``customers/update`` ->
:func:`parse_customer_payload`; ``customers/delete`` -> :func:`parse_deleted_customer`;
``customers_email_marketing_consent/update`` -> :func:`parse_consent_payload`. A body that cannot be read
raises :class:`WebhookPayloadError`, whose reason names fields, never values (no PII).

Each record field means what ``parsing.py`` reads over GraphQL (``parse_order`` / ``parse_customer``):
ids are the GraphQL gids (``admin_graphql_api_id``, else ``gid://shopify/<Type>/{id}``); ``total`` and
``currency`` come from ``current_total_price_set.shop_money`` (``currentTotalPriceSet.shopMoney``);
``cancelled`` means ``cancelled_at`` is set; line items give ``product_id`` (as a Product gid), ``sku`` and
``quantity`` (units ordered including refunded ones, as GraphQL's ``LineItem.quantity``); the consent state
is REST's lowercase ``email_marketing_consent.state`` upper-cased onto :class:`Consent`, anything else UNKNOWN.

Channel: ``"utm_source / utm_medium"`` from ``landing_site``'s query string, else **None**. GraphQL's fallback,
``customerJourneySummary.firstVisit.source``, is the traffic source ("a platform (Facebook, Google), email,
direct, a website domain, QR code, or unknown"); no REST order field carries it. ``source_name`` is the sales
channel ("web", "pos", "mobile_app"), a different thing, and a host taken from ``referring_site`` would not
match GraphQL's values, so either would put a wrong or differently spelled channel next to the pulled
ones. A merge should keep a pulled channel over a webhook's None. Also: ``landing_site`` and
``referring_site`` are the fields behind GraphQL's deprecated ``Order.landingPageUrl`` / ``referrerUrl``,
which the schema replaces with ``customerJourneySummary.lastVisit``; the pull reads ``firstVisit``. So for a
journey of several visits a webhook's UTM channel, landing page and referrer are last-touch values, while
the pull's are first-touch. They agree when there was only one visit.

Consent: from API 2025-01, Shopify removed ``email_marketing_consent`` (and ``tags``,
``sms_marketing_consent``) from webhook payloads that contain a customer. It now comes separately as
``customers_email_marketing_consent/update``. At 2026-04 a ``customers/*`` body therefore parses with
consent UNKNOWN, and :func:`customer_from_order_payload` normally returns None. Both still read the field
when a body has it (older subscriptions).

Verified (facts, not prose), 2026:
- REST Order fields and shapes (numeric ``id`` beside ``admin_graphql_api_id``; money as strings; money sets
  ``{shop_money, presentment_money}`` of ``{amount, currency_code}``; ``discount_codes`` ``[{code, amount,
  type}]``; ``landing_site``, ``referring_site``, ``source_name``; ``line_items[].product_id/sku/quantity``;
  times ISO 8601 with the shop's UTC offset, e.g. ``2008-01-10T11:00:00-05:00``; lowercase consent
  ``"not_subscribed"``): Shopify's generated REST resource and docs-example fixture,
  https://github.com/Shopify/shopify-app-js/blob/046b84cc7b96bc69fa2643c47745e9b709a6cf96/packages/apps/shopify-api/rest/admin/2025-01/order.ts
  and https://github.com/Shopify/shopify-app-js/blob/ac267819c6425f13e68e0522a1c5024bcc4c73ff/packages/apps/shopify-api/rest/admin/__tests__/2025-01/order.test.ts
- Consent states INVALID, NOT_SUBSCRIBED, PENDING, REDACTED, SUBSCRIBED, UNSUBSCRIBED:
  https://shopify.dev/docs/api/admin-graphql/latest/enums/CustomerEmailMarketingState. REST uses the same
  values in lowercase. The fixture above shows ``not_subscribed``; the others follow the same rule.
- The 2025-01 removal: https://shopify.dev/changelog/new-customer-s-webhook-and-changes-to-existing-customer-s-webhooks-payload
  . Newer orders/create samples show a ``customer`` without the field. The topic
  ``customers_email_marketing_consent/update`` is in the 2026-04 schema (``WebhookSubscriptionTopic``,
  connectors/shopify/spec). Its body fields ``customer_id``, ``email_address``, ``email_marketing_consent``
  come from https://github.com/nozzlegear/ShopifySharp/blob/67dd3491d60c9b49306802b928a42a054c123088/ShopifySharp/Entities/CustomerEmailMarketingConsentWebhook.cs
- ``CustomerVisit.source``, ``Order.sourceName``, and the deprecation of ``Order.landingPageUrl`` /
  ``referrerUrl`` for ``customerJourneySummary.lastVisit``: the 2026-04 schema in connectors/shopify/spec
  (same text at https://shopify.dev/docs/api/admin-graphql/latest/objects/CustomerVisit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connectors.kernel.records import Consent, CustomerRecord, LineItem, OrderRecord
from connectors.kernel.records import obj as _obj


class WebhookPayloadError(ValueError):
    """An unusable webhook body; ``reason`` names fields, never values (no PII)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ConsentUpdate:
    """One ``customers_email_marketing_consent/update``: a customer's email consent as it is now."""

    customer_id: str
    email: str | None
    email_consent: Consent
    consent_updated_at: datetime | None


def parse_order_payload(body: Any) -> OrderRecord:
    """The order ``ShopifySource`` would pull, except for the channel (see the module docstring)."""
    order = _body(body)
    money = _obj(_obj(order, "current_total_price_set"), "shop_money")
    try:
        total = Decimal(str(money["amount"]))
    except (KeyError, InvalidOperation):
        raise WebhookPayloadError("non-numeric or missing current_total_price_set amount") from None
    if not total.is_finite():
        raise WebhookPayloadError("non-numeric current_total_price_set amount")
    currency = _text(money, "currency_code")
    if currency is None:
        raise WebhookPayloadError("missing currency code")
    codes = order.get("discount_codes") or []
    if not isinstance(codes, list) or not all(isinstance(c, dict) and isinstance(c.get("code"), str) for c in codes):
        raise WebhookPayloadError("discount_codes is not a list of objects with a code")
    customer = _obj(order, "customer")
    has_customer = any(customer.get(k) is not None for k in ("admin_graphql_api_id", "id"))
    return OrderRecord(
        order_id=_gid(order, "Order"),
        source="shopify",
        customer_id=_gid(customer, "Customer") if has_customer else None,
        email=_text(order, "email"),
        created_at=_required_time(order, "created_at"),
        updated_at=_required_time(order, "updated_at"),
        total=total,
        currency=currency,
        cancelled=_time(order, "cancelled_at", required=False) is not None,
        test=bool(order.get("test")),
        phone=_text(order, "phone"),
        discount_codes=tuple(c["code"] for c in codes),
        lines=tuple(_line(item) for item in _list(order, "line_items")),
        channel=_utm_channel(_text(order, "landing_site")),
        landing_page=_text(order, "landing_site"),
        referrer=_text(order, "referring_site"),
    )


def parse_customer_payload(body: Any) -> CustomerRecord:
    """The customer ``ShopifySource`` would pull; consent is UNKNOWN when the body has none (2025-01+)."""
    return _customer(_body(body))


def customer_from_order_payload(body: Any) -> CustomerRecord | None:
    """The order's embedded customer, when it carries a consent state and an update time, else None."""
    customer = _body(body).get("customer")
    if not isinstance(customer, dict) or customer.get("updated_at") is None:
        return None
    if not isinstance(_obj(customer, "email_marketing_consent").get("state"), str):
        return None
    return _customer(customer)


def parse_deleted_customer(body: Any) -> str:
    """The gid of the customer a ``customers/delete`` body names."""
    return _gid(_body(body), "Customer")


def parse_consent_payload(body: Any) -> ConsentUpdate:
    """A ``customers_email_marketing_consent/update`` body: how consent reaches webhooks from 2025-01 on."""
    node = _body(body)
    customer_id = node.get("customer_id")
    if not isinstance(customer_id, int) or isinstance(customer_id, bool) or customer_id <= 0:
        raise WebhookPayloadError("missing customer_id")
    consent = node.get("email_marketing_consent")
    if not isinstance(consent, dict):
        raise WebhookPayloadError("missing email_marketing_consent")
    return ConsentUpdate(
        customer_id=f"gid://shopify/Customer/{customer_id}",
        email=_text(node, "email_address"),
        email_consent=_consent(consent.get("state")),
        consent_updated_at=_time(consent, "consent_updated_at", required=False),
    )


# -- field readers: the same rules as source.py's, with REST field names in the reasons ----------------
def _customer(node: dict[str, Any]) -> CustomerRecord:
    consent = _obj(node, "email_marketing_consent")
    return CustomerRecord(
        customer_id=_gid(node, "Customer"),
        source="shopify",
        email=_text(node, "email"),
        updated_at=_required_time(node, "updated_at"),
        email_consent=_consent(consent.get("state")),
        consent_updated_at=_time(consent, "consent_updated_at", required=False),
        phone=_text(node, "phone"),
        first_name=_text(node, "first_name"),
        last_name=_text(node, "last_name"),
        country=_text(_obj(node, "default_address"), "country_code"),
    )


def _line(item: Any) -> LineItem:
    if not isinstance(item, dict):
        raise WebhookPayloadError("line item without an integer quantity")
    quantity = item.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise WebhookPayloadError("line item without an integer quantity")
    product = item.get("product_id")
    if product is not None and (not isinstance(product, int) or isinstance(product, bool)):
        raise WebhookPayloadError("line item product_id is not an integer")
    product_gid = None if product is None else f"gid://shopify/Product/{product}"
    return LineItem(product_id=product_gid, sku=_text(item, "sku"), quantity=quantity)


def _utm_channel(landing: str | None) -> str | None:
    if landing is None:
        return None
    try:
        query = parse_qs(urlsplit(landing).query)
    except ValueError:  # not a URL: no UTM to read, as GraphQL would have none
        return None
    parts = [query[key][0] for key in ("utm_source", "utm_medium") if query.get(key)]
    return " / ".join(parts) or None


def _consent(state: Any) -> Consent:
    name = state.upper() if isinstance(state, str) else ""
    return Consent(name) if name in Consent.__members__ else Consent.UNKNOWN


def _body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WebhookPayloadError("body is not an object")
    return body


def _gid(node: dict[str, Any], kind: str) -> str:
    gid = node.get("admin_graphql_api_id")
    if isinstance(gid, str) and gid:
        if not gid.startswith(f"gid://shopify/{kind}/"):
            raise WebhookPayloadError(f"admin_graphql_api_id is not a {kind} id")
        return gid
    legacy = node.get("id")
    if isinstance(legacy, int) and not isinstance(legacy, bool) and legacy > 0:
        return f"gid://shopify/{kind}/{legacy}"
    raise WebhookPayloadError("missing id")


def _list(node: dict[str, Any], key: str) -> list[Any]:
    value = node.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise WebhookPayloadError(f"{key} is not a list")
    return value


def _text(node: dict[str, Any], key: str) -> str | None:
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookPayloadError(f"{key} is not a string")
    return value or None


def _time(node: dict[str, Any], key: str, *, required: bool) -> datetime | None:
    value = node.get(key)
    if value is None:
        if required:
            raise WebhookPayloadError(f"missing {key}")
        return None
    if not isinstance(value, str):
        raise WebhookPayloadError(f"bad {key}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise WebhookPayloadError(f"bad {key}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _required_time(node: dict[str, Any], key: str) -> datetime:
    ts = _time(node, key, required=True)
    assert ts is not None
    return ts
