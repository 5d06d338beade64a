"""Control API and a small dashboard for marketers: status, segment sizes, resync triggers.

Every route but ``/healthz`` needs ``Authorization: Bearer <AUDIENCE_SYNC_API_TOKEN>``; without a
configured token the API refuses to start, so it is never exposed open by accident.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import SecretStr

from connectors.redact import mask_email
from worker.config import AppConfig, ConfigFileError, load_config
from worker.erasure import ErasureError, request_erasure
from worker.settings import Settings
from worker.status import status_rows
from worker.store import Store, open_store

Enqueue = Callable[[str, bool], str]


def _celery_enqueue(mapping: str, full: bool) -> str:
    from worker.tasks import sync_mapping_task

    return str(sync_mapping_task.apply_async(args=[mapping], kwargs={"full": full}).id)


def valid_shopify_hmac(raw: bytes, header: str | None, secret: SecretStr) -> bool:
    """``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(raw body, app secret)); compared in constant time."""
    if not header:
        return False
    digest = hmac.new(secret.get_secret_value().encode(), raw, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), header.strip().encode())


def create_app(settings: Settings, *, enqueue: Enqueue = _celery_enqueue) -> FastAPI:
    if settings.api_token is None:
        raise SystemExit("set AUDIENCE_SYNC_API_TOKEN before starting the control API")
    token = settings.api_token.get_secret_value()
    store: Store = open_store(settings.database_url)
    config: AppConfig = load_config(settings.config)
    app = FastAPI(title="audience-sync control API", version="0.1.0")

    def authorised(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(presented.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    protected = APIRouter(dependencies=[Depends(authorised)])

    @app.post("/webhooks/shopify/customers/redact")
    async def shopify_customers_redact(request: Request) -> dict[str, Any]:
        """Shopify's mandatory compliance webhook: erase the customer here and everywhere."""
        secret = settings.shopify_webhook_secret
        raw = await request.body()
        if secret is None or not valid_shopify_hmac(raw, request.headers.get("x-shopify-hmac-sha256"), secret):
            raise HTTPException(401, "invalid webhook signature")
        try:
            email = str((json.loads(raw).get("customer") or {}).get("email") or "")
        except (ValueError, AttributeError):
            raise HTTPException(400, "body is not the customers/redact JSON") from None
        if not email:
            return {"erased": False, "reason": "no email in the request; nothing held by email"}
        try:
            erasure_id, _ = request_erasure(store, email)
        except ErasureError as exc:
            raise HTTPException(422, str(exc)) from None
        for name in config.mappings:
            enqueue(name, False)
        return {"erased": True, "erasure_id": erasure_id, "destinations": "removal queued for every mapping"}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @protected.get("/status")
    def status() -> list[dict[str, Any]]:
        return status_rows(settings)

    @protected.get("/segments")
    def segments() -> dict[str, int]:
        return store.segment_sizes()

    @protected.get("/preview")
    def preview() -> dict[str, Any]:
        """Sizes, change since the last run, overlaps and warnings, as `audience-sync preview`."""
        from worker.preview import preview_dict

        return preview_dict(settings)

    @protected.get("/segments/{segment}/sample")
    def sample(segment: str, limit: Annotated[int, Query(ge=1, le=50)] = 10) -> list[str]:
        keys = sorted(store.segment_keys(segment))[:limit]
        return [mask_email(m.email) if m.email else m.key for m in store.members(keys).values()]

    @protected.get("/mappings")
    def mappings() -> list[dict[str, Any]]:
        return [
            {
                "name": m.name,
                "segment": m.segment,
                "destination": m.destination,
                "mode": m.mode,
                "acknowledged": len(store.acknowledged(m.name)),
                "rejected": len(store.rejected(m.name)),
            }
            for m in config.mappings.values()
        ]

    @protected.get("/mappings/{name}/rejected")
    def rejected(name: str) -> list[dict[str, Any]]:
        try:
            config.mapping(name)
        except ConfigFileError as exc:
            raise HTTPException(404, str(exc)) from None
        return [
            {
                "customer_key": r["customer_key"],
                "operation": r["operation"],
                "code": r["code"],
                "reason": r["reason"],
            }
            for r in store.rejected(name).values()
        ]

    @protected.post("/mappings/{name}/resync", status_code=202)
    def resync(name: str, full: bool = False) -> dict[str, Any]:
        try:
            config.mapping(name)
        except ConfigFileError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"queued": name, "full": full, "task_id": enqueue(name, full)}

    @protected.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        sizes = store.segment_sizes()
        rows = "".join(
            f"<tr><td>{html.escape(r['step'])}</td><td>{html.escape(r['mapping'])}</td>"
            f"<td>{html.escape(str(r['finished_at']))}</td><td>{html.escape(r['outcome'])}</td>"
            f"<td>{r['added'] or 0}</td><td>{r['removed'] or 0}</td><td>{r['rejected'] or 0}</td></tr>"
            for r in status_rows(settings)
        )
        seg = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(sizes.items()))
        return (
            "<!doctype html><title>audience-sync</title><h1>audience-sync</h1>"
            "<h2>Last runs</h2><table border=1><tr><th>step</th><th>mapping</th><th>finished</th>"
            f"<th>outcome</th><th>added</th><th>removed</th><th>rejected</th></tr>{rows}</table>"
            f"<h2>Segments</h2><table border=1><tr><th>segment</th><th>members</th></tr>{seg}</table>"
        )

    app.include_router(protected)
    return app
