"""Shopify's mandatory compliance webhooks: ``customers/redact``, ``customers/data_request``, ``shop/redact``.

Each delivery is size-capped before it is read, HMAC-verified, deduplicated by ``X-Shopify-Webhook-Id``
and committed to the store before the 200 answer; nothing here needs Redis. Removals from the
destinations are owed in the store and run at the next cycle; when a broker answers, they are asked
for at once, after the answer has gone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request
from pydantic import SecretStr

from connectors.kernel.identifiers import sha256_hex
from worker.config import AppConfig
from worker.erasure import ErasureError, redact_shop, request_erasure
from worker.settings import Settings
from worker.store import ErasureRequest, Store, Webhook

log = logging.getLogger(__name__)

#: Shopify's compliance payloads are a few hundred bytes; a generous cap that no real one reaches
MAX_WEBHOOK_BYTES = 256 * 1024

AskForRemovals = Callable[[ErasureRequest], None]


def valid_shopify_hmac(raw: bytes, header: str | None, secret: SecretStr) -> bool:
    """``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(raw body, app secret)); compared in constant time."""
    if not header:
        return False
    digest = hmac.new(secret.get_secret_value().encode(), raw, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), header.strip().encode())


async def read_capped(request: Request, limit: int = MAX_WEBHOOK_BYTES) -> bytes:
    """The body, refused with 413 before it is read whole when it is larger than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"webhook body larger than {limit // 1024} KiB; Shopify's are far smaller")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"webhook body larger than {limit // 1024} KiB; Shopify's are far smaller")
    return bytes(body)


def _shop_host(config: AppConfig) -> str | None:
    url = str(getattr(config.source, "shop_url", "") or "")
    host = urlsplit(url).hostname if "://" in url else None
    return host if host and host.endswith(".myshopify.com") else None


def _gids(kind: str, values: Any) -> tuple[str, ...]:
    if not isinstance(values, list):
        values = [values] if values is not None else []
    return tuple(f"gid://shopify/{kind}/{v}" for v in values if isinstance(v, int | str) and str(v).isdigit())


def _object(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not the topic's JSON"},
    401: {"description": "invalid webhook signature (X-Shopify-Hmac-Sha256)"},
    413: {"description": "body larger than 256 KiB"},
    503: {"description": "webhooks are not configured (AUDIENCE_SYNC_SHOPIFY_WEBHOOK_SECRET)"},
}


async def verified_json(request: Request, topic: str, secret: SecretStr | None) -> tuple[bytes, dict[str, Any]]:
    """The body of a Shopify webhook (raw and parsed), once its signature is checked (503
    unconfigured, 413 too big, 401 forged, 400 not a JSON object)."""
    if secret is None or not secret.get_secret_value():
        raise HTTPException(
            503, "webhooks are not configured: set AUDIENCE_SYNC_SHOPIFY_WEBHOOK_SECRET to the app's client secret"
        )
    raw = await read_capped(request)
    if not valid_shopify_hmac(raw, request.headers.get("x-shopify-hmac-sha256"), secret):
        raise HTTPException(401, "invalid webhook signature")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise HTTPException(400, f"body is not the {topic} JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, f"body is not the {topic} JSON")
    return raw, payload


def webhook_router(settings: Settings, store: Store, config: AppConfig, ask: AskForRemovals) -> APIRouter:
    router = APIRouter(prefix="/webhooks/shopify", tags=["webhooks"], responses=ANSWERS)
    secret = settings.shopify_webhook_secret
    if secret is None or not secret.get_secret_value():
        log.warning(
            "AUDIENCE_SYNC_SHOPIFY_WEBHOOK_SECRET is not set: Shopify's compliance webhooks are answered 503 "
            "until it is (set it to the app's client secret)"
        )

    async def verified(request: Request, topic: str) -> tuple[dict[str, Any], Webhook | None]:
        _, payload = await verified_json(request, topic, secret)
        webhook_id = (request.headers.get("x-shopify-webhook-id") or "").strip()[:128]
        return payload, Webhook(webhook_id, topic) if webhook_id else None

    def foreign_shop(payload: dict[str, Any]) -> bool:
        ours = _shop_host(config)
        theirs = str(payload.get("shop_domain") or "").strip().lower()
        return bool(ours and theirs and theirs != ours)

    @router.post("/customers/redact")
    async def customers_redact(request: Request, background: BackgroundTasks) -> dict[str, Any]:
        """Erase the customer here at once; every destination removes them at its next sync."""
        payload, webhook = await verified(request, "customers/redact")
        if webhook is not None and store.webhook_seen(webhook.webhook_id):
            return {"duplicate": True, "detail": "this delivery was processed before"}
        if foreign_shop(payload):
            return {"erased": False, "detail": "not this deployment's shop; nothing is held for it"}
        customer = _object(payload, "customer")
        email = customer.get("email") if isinstance(customer.get("email"), str) and customer.get("email") else None
        ids = _gids("Customer", customer.get("id"))
        if email is None and not ids:
            raise HTTPException(400, "customers/redact names no customer (no email, no id)")
        try:
            result = request_erasure(
                store,
                config,
                email,
                origin="webhook",
                customer_ids=ids,
                order_ids=_gids("Order", payload.get("orders_to_redact")),
                webhook=webhook,
            )
        except ErasureError as exc:
            raise HTTPException(400, str(exc)) from None
        if result.duplicate:
            return {"duplicate": True, "detail": "this delivery was processed before"}
        if result.created:
            background.add_task(ask, result)
        return {
            "erased": True,
            "erasure_id": result.erasure_id,
            "already_erased": not result.created,
            "destinations": "removal owed by every mapping that held the person; runs at the next sync",
        }

    @router.post("/customers/data_request")
    async def customers_data_request(request: Request) -> dict[str, Any]:
        """Record the request; `audience-sync export-customer EMAIL` (or the API) produces the data."""
        payload, webhook = await verified(request, "customers/data_request")
        if foreign_shop(payload):
            return {"recorded": False, "detail": "not this deployment's shop; nothing is held for it"}
        customer = _object(payload, "customer")
        email = str(customer.get("email") or "").strip().lower()
        ids = _gids("Customer", customer.get("id"))
        request_id = store.record_data_request(
            sha256_hex(email) if email else sha256_hex(" ".join(ids)), ids, origin="webhook", webhook=webhook
        )
        if request_id is None:
            return {"duplicate": True, "detail": "this delivery was processed before"}
        return {"recorded": True, "data_request_id": request_id, "produce_with": "audience-sync export-customer EMAIL"}

    @router.post("/shop/redact")
    async def shop_redact(request: Request, background: BackgroundTasks) -> dict[str, Any]:
        """The shop uninstalled the app 48 hours ago: erase everything held for it, empty every audience."""
        payload, webhook = await verified(request, "shop/redact")
        if foreign_shop(payload):
            return {"erased": False, "detail": "not this deployment's shop; nothing is held for it"}
        domain = str(payload.get("shop_domain") or payload.get("shop_id") or "shop")
        result = redact_shop(store, config, domain, webhook=webhook)
        if result.duplicate:
            return {"duplicate": True, "detail": "this delivery was processed before"}
        background.add_task(ask, result)
        return {"erased": True, "erasure_id": result.erasure_id, "orders_deleted": result.orders_deleted}

    return router
