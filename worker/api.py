"""Control API: status, segments, mappings, resync triggers, erasures and Shopify's compliance webhooks.

Every route but ``/healthz`` and the (HMAC-signed) webhooks needs ``Authorization: Bearer
<AUDIENCE_SYNC_API_TOKEN>``. The API refuses to start without a token of at least
:data:`MIN_TOKEN_LENGTH` characters, so it is never exposed open or guessable by accident. Answers
carry masked identifiers only, and errors never carry server paths.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from connectors.kernel.redact import mask_email
from worker.config import AppConfig, load_config
from worker.erasure import ErasureError, export_customer, request_erasure
from worker.queue import BrokerUnavailable, Send, celery_send, request_sync
from worker.settings import Settings
from worker.status import history_rows, status_report
from worker.store import ErasureRequest, Store, open_store
from worker.webhooks import webhook_router

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 32
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 - a command, not a secret


class TokenError(SystemExit):
    """The API token is missing or too short to be safe; the message says how to make one."""


def checked_token(settings: Settings) -> str:
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        what = "is not set" if not token.strip() else f"is {len(token.strip())} characters long"
        raise TokenError(
            f"AUDIENCE_SYNC_API_TOKEN {what}; the control API needs a token of at least {MIN_TOKEN_LENGTH} "
            f"characters. Make one with: {MAKE_TOKEN}"
        )
    return token


def mask_key(key: str) -> str:
    """A customer key for an answer: a guest's key is their email, so it is masked like every sample."""
    return mask_email(key) if "@" in key else key


class EmailBody(BaseModel):
    """An address travels in the body, never in a URL (URLs end up in logs and browser history)."""

    email: str


def _not_found(what: str, name: str, known: Any) -> HTTPException:
    return HTTPException(404, f"no {what} named {name!r} (known: {', '.join(sorted(known)) or 'none'})")


def create_app(settings: Settings, *, enqueue: Send = celery_send) -> FastAPI:
    token = checked_token(settings)
    store: Store = open_store(settings.database_url)
    config: AppConfig = load_config(settings.config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.dispose()

    app = FastAPI(
        title="audience-sync control API",
        version="0.2.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )

    def authorised(request: Request) -> None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        presented = presented.strip()
        if (
            scheme.lower() != "bearer"
            or not presented
            or not secrets.compare_digest(presented.encode(), token.encode())
        ):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    protected = APIRouter(dependencies=[Depends(authorised)])

    def ask_for_removals(result: ErasureRequest) -> None:
        """After a webhook answered: ask the workers now; a broker that is down leaves it to the cycle."""
        for name, held in result.held.items():
            if not held or name not in config.mappings:
                continue
            try:
                request_sync(store, settings, name, full=False, reason="erasure", send=enqueue)
            except BrokerUnavailable:
                log.warning("erasure #%s: the broker did not answer; removals run at the next cycle", result.erasure_id)
                return

    app.include_router(webhook_router(settings, store, config, ask_for_removals))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @protected.get("/status")
    def status() -> dict[str, Any]:
        """Last run per step and mapping, each mapping's last problem, erasures, owed syncs."""
        return status_report(store)

    @protected.get("/status/history")
    def history(mapping: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        if mapping is not None and mapping not in config.mappings:
            raise _not_found("mapping", mapping, config.mappings)
        return history_rows(settings, mapping, limit)

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
        known = set(config.segments.resolved()) | set(store.segment_sizes())
        if segment not in known:
            raise _not_found("segment", segment, known)
        keys = sorted(store.segment_keys(segment))[:limit]
        return [mask_email(m.email) if m.email else mask_key(m.key) for m in store.members(keys).values()]

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
        if name not in config.mappings:
            raise _not_found("mapping", name, config.mappings)
        return [
            {
                "customer_key": mask_key(str(r["customer_key"])),
                "operation": r["operation"],
                "code": r["code"],
                "reason": r["reason"],
            }
            for r in store.rejected(name).values()
        ]

    @protected.post("/mappings/{name}/resync", status_code=202)
    def resync(name: str, full: bool = False) -> Any:
        """Ask the workers for a resync (or full replace); one already owed is returned, not queued twice."""
        if name not in config.mappings:
            raise _not_found("mapping", name, config.mappings)
        try:
            queued = request_sync(
                store, settings, name, full=full, reason="full replace" if full else "resync", send=enqueue
            )
        except BrokerUnavailable as exc:
            return JSONResponse({"detail": str(exc), "owed": True}, status_code=503)
        body = {
            "queued": name,
            "full": queued.full,
            "task_id": queued.task_id,
            "coalesced": queued.coalesced,
            "workers": queued.workers,
            "detail": queued.describe(settings.queue),
        }
        return JSONResponse(body, status_code=200 if queued.coalesced else 202)

    @protected.get("/erasures")
    def erasures(limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
        """By hash, newest first, with per-mapping progress."""
        return [e.to_dict() for e in store.erasures(limit=limit)]

    @protected.post("/erasures", status_code=202)
    def erase(body: EmailBody) -> dict[str, Any]:
        """Erase a person: recorded and removed from the store now; destinations at their next sync."""
        try:
            result = request_erasure(store, config, body.email, origin="api")
        except ErasureError as exc:
            raise HTTPException(422, str(exc)) from None
        if result.created:
            ask_for_removals(result)
        return {"erasure_id": result.erasure_id, "already_erased": not result.created}

    @protected.post("/customers/export")
    def export(body: EmailBody) -> dict[str, Any]:
        """What we hold about a person (a customers/data_request answer)."""
        try:
            return export_customer(store, body.email)
        except ErasureError as exc:
            raise HTTPException(422, str(exc)) from None

    @protected.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        from worker.dashboard import render_dashboard

        return render_dashboard(store, config)

    if settings.api_docs:
        _serve_docs(app, protected)

    app.include_router(protected)
    return app


def _serve_docs(app: FastAPI, router: APIRouter) -> None:
    """OpenAPI description and Swagger UI behind the token, with the UI's files from the package."""
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @router.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @router.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="audience-sync control API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
