"""The control API and the marketer's web app: one route table, two faces.

Every page of the web app (``/app/...``) has a JSON twin at the same path without ``/app``, served by
the same view function (:mod:`worker.web.views`); actions (resync, full replace, erasure) likewise.
Scripts use ``Authorization: Bearer <token>``; browsers sign in once and carry a session cookie, and
every form carries the session's CSRF token. Roles: a viewer reads, an operator may also dry-run,
resync and replace, an admin may also erase and see settings; the server refuses what a role may not
do (403) whatever the page shows. The API refuses to start without tokens of at least
:data:`~worker.web.auth.MIN_TOKEN_LENGTH` characters. Answers carry masked identifiers only and no
server paths.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from connectors.kernel.redact import mask_email
from worker.config import AppConfig, load_config
from worker.erasure import ErasureError, export_customer, request_erasure
from worker.queue import BrokerUnavailable, Send, celery_send, request_sync
from worker.settings import Settings
from worker.status import history_rows, status_report
from worker.store import ErasureRequest, Store, open_store
from worker.store_webhooks import WebhookCycles, store_webhook_router
from worker.web import views
from worker.web.auth import (
    COOKIE,
    MIN_TOKEN_LENGTH,
    Principal,
    Role,
    Sessions,
    TokenError,
    check_csrf,
    role_tokens,
    secure_request,
)
from worker.web.charts import bars, line
from worker.webhooks import webhook_router

log = logging.getLogger(__name__)
WEB = Path(__file__).parent / "web"
__all__ = ["MIN_TOKEN_LENGTH", "TokenError", "create_app"]
#: what an action reports back to the page (a code in the URL, never free text)
DONE = {
    "resync": "Resync asked for: the workers run it next.",
    "resync-owed": "A resync was already owed: it was not asked for twice.",
    "erasure": "Erasure recorded: the person is gone from the store; destinations follow at their next sync.",
    "erasure-again": "This person was erased before; nothing new was held.",
    "signed-out": "Signed out.",
}
Responses = dict[int | str, dict[str, Any]]
NEEDS: Responses = {
    401: {"description": "not signed in, or a wrong token"},
    403: {"description": "your role may not do this"},
}
MISSING: Responses = {**NEEDS, 404: {"description": "no such segment or mapping"}}
BODY: Responses = {400: {"description": "the body is not JSON"}, 422: {"description": "not an email address"}}


def mask_key(key: str) -> str:
    """A customer key for an answer: a guest's key is their email, so it is masked like every sample."""
    return mask_email(key) if "@" in key else key


class EmailBody(BaseModel):
    """An address travels in the body, never in a URL (URLs end up in logs and browser history)."""

    email: str


class SignIn(Exception):
    """A page was asked for without a session: the browser goes to the sign-in page."""


@dataclass
class View:
    """One row of the route table: a page at ``/app{path}`` and its JSON twin at ``{path}``."""

    path: str
    template: str
    role: Role
    build: Callable[..., dict[str, Any]]
    #: ``plain``, ``named`` (a ``{name}`` in the path, and ``page``), or ``runs`` (the run filters)
    shape: str = "plain"


def create_app(settings: Settings, *, enqueue: Send = celery_send) -> FastAPI:
    tokens = role_tokens(settings)
    store: Store = open_store(settings.database_url)
    config: AppConfig = load_config(settings.config)
    sessions = Sessions(store, settings, tokens)
    templates = Jinja2Templates(directory=str(WEB / "templates"))
    templates.env.globals.update(line=line, bars=bars, Role=Role)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.dispose()

    app = FastAPI(
        title="audience-sync control API",
        version="0.3.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")

    # -- who is asking --------------------------------------------------------------------------------
    def need(role: Role) -> Callable[[Request], Principal]:
        def dependency(request: Request) -> Principal:
            who = sessions.principal(request)
            if who is None:
                raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
            if not who.may(role):
                raise HTTPException(403, f"a {who.role.name} may not do this (it needs {role.name})")
            if request.method not in ("GET", "HEAD") and who.csrf is not None:
                check_csrf(who, request.headers.get("x-csrf-token"))
            return who

        return dependency

    def page(role: Role) -> Callable[[Request], Principal]:
        def dependency(request: Request) -> Principal:
            who = sessions.principal(request)
            if who is None:
                raise SignIn()
            if not who.may(role):
                raise HTTPException(403, f"a {who.role.name} may not do this (it needs {role.name})")
            return who

        return dependency

    @app.exception_handler(SignIn)
    async def to_sign_in(request: Request, exc: SignIn) -> Response:
        return RedirectResponse("/app/sign-in", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/app"):
            who = sessions.principal(request)
            context = {
                "status": exc.status_code,
                "title": _title(exc.status_code),
                "detail": exc.detail,
                "principal": who,
            }
            return templates.TemplateResponse(request, "error.html", context, status_code=exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def render(request: Request, who: Principal, template: str, data: dict[str, Any], **extra: Any) -> HTMLResponse:
        message = DONE.get(request.query_params.get("done", ""))
        context = {"principal": who, "data": data, "message": message, **extra}
        return templates.TemplateResponse(request, template, context)

    def run_views(name: str | None, data: dict[str, Any], template: str) -> dict[str, Any]:
        """What a template needs beyond the view's data (chart points, filter choices)."""
        if template == "segment.html":
            return {"points": [(h["at"], h["size"]) for h in data["history"]]}
        if template == "mapping.html":
            syncs = [r for r in reversed(data["runs"]["runs"]) if r["step"] == "sync"]
            return {"run_bars": [(f"run {r['run_id']}", r["added"] or 0, r["removed"] or 0) for r in syncs]}
        if template == "runs.html":
            from worker.status import PROBLEMS

            return {"mappings": sorted(config.mappings), "outcomes": ["ok", "running", "problem", *PROBLEMS]}
        return {}

    # -- the route table ------------------------------------------------------------------------------
    table = [
        View("/overview", "overview.html", Role.viewer, lambda: views.overview(store, config)),
        View(
            "/segments/{name}",
            "segment.html",
            Role.viewer,
            lambda name, page: views.segment_detail(store, config, name),
            "named",
        ),
        View(
            "/mappings/{name}",
            "mapping.html",
            Role.viewer,
            lambda name, page: views.mapping_detail(store, config, name, page),
            "named",
        ),
        View("/mappings/{name}/dry-run", "dryrun.html", Role.operator, lambda name, page: dry_run(name), "named"),
        View("/runs", "runs.html", Role.viewer, lambda **filters: views.runs_page(store, **filters), "runs"),
        View("/erasures", "erasures.html", Role.admin, lambda: views.erasures(store)),
        View("/settings", "settings.html", Role.admin, lambda: views.settings_view(settings, config)),
    ]

    def dry_run(name: str) -> dict[str, Any]:
        from worker.dryrun import dry_run as plan
        from worker.factory import make_runtime

        if name not in config.mappings:
            raise views.NotFound(f"no mapping named {name!r}")
        return plan(store, config, settings, make_runtime(settings), name)

    def built(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return call()
        except views.NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    for view in table:
        _register(app, view, need, page, built, render, run_views)

    # -- actions --------------------------------------------------------------------------------------
    def ask_for_removals(result: ErasureRequest) -> None:
        """After an erasure: ask the workers now; a broker that is down leaves it to the next cycle."""
        for name, held in result.held.items():
            if not held or name not in config.mappings:
                continue
            try:
                request_sync(store, settings, name, full=False, reason="erasure", send=enqueue)
            except BrokerUnavailable:
                log.warning("erasure #%s: the broker did not answer; removals run at the next cycle", result.erasure_id)
                return

    def resync_mapping(name: str, full: bool) -> Any:
        if name not in config.mappings:
            raise HTTPException(404, f"no mapping named {name!r}")
        return request_sync(store, settings, name, full=full, reason="full replace" if full else "resync", send=enqueue)

    @app.post(
        "/mappings/{name}/resync",
        status_code=202,
        responses={
            **MISSING,
            200: {"description": "already owed"},
            503: {"description": "the broker did not answer; the request stays owed"},
        },
    )
    def resync(name: str, full: bool = False, who: Principal = Depends(need(Role.operator))) -> Any:
        """Ask the workers for a resync (or full replace); one already owed is returned, not queued twice."""
        try:
            queued = resync_mapping(name, full)
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

    @app.get("/app/mappings/{name}/resync", response_class=HTMLResponse, include_in_schema=False)
    def confirm_resync(
        request: Request, name: str, full: bool = False, who: Principal = Depends(page(Role.operator))
    ) -> HTMLResponse:
        data = built(lambda: views.mapping_detail(store, config, name))
        if full and data["supports_replace"]:
            explanation = (
                f"The whole audience {data['audience']} at {data['destination']} is replaced in one session "
                "with exactly the segment's eligible members; everyone else in it is removed."
            )
        elif full:
            explanation = (
                "Every eligible member of the segment is sent again (repairing anything changed by hand), "
                "and everyone the destination may hold who is no longer eligible is removed."
            )
        else:
            explanation = "The differences since the last sync are sent now: new members added, leavers removed."
        context = {"principal": who, "name": name, "full": full, "explanation": explanation}
        return templates.TemplateResponse(request, "confirm.html", context)

    @app.post("/app/mappings/{name}/resync", include_in_schema=False)
    def resync_form(
        name: str,
        csrf: Annotated[str, Form()],
        full: Annotated[str, Form()] = "false",
        who: Principal = Depends(page(Role.operator)),
    ) -> Response:
        check_csrf(who, csrf)
        try:
            queued = resync_mapping(name, full == "true")
        except BrokerUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        done = "resync-owed" if queued.coalesced else "resync"
        return RedirectResponse(f"/app/mappings/{name}?done={done}", status_code=303)

    @app.post("/erasures", status_code=202, responses={**NEEDS, **BODY})
    def erase(body: EmailBody, who: Principal = Depends(need(Role.admin))) -> dict[str, Any]:
        """Erase a person: recorded and removed from the store now; destinations at their next sync."""
        try:
            result = request_erasure(store, config, body.email, origin="api")
        except ErasureError as exc:
            raise HTTPException(422, str(exc)) from None
        if result.created:
            ask_for_removals(result)
        return {"erasure_id": result.erasure_id, "already_erased": not result.created}

    @app.post("/app/erasures", include_in_schema=False)
    def erase_form(
        email: Annotated[str, Form()], csrf: Annotated[str, Form()], who: Principal = Depends(page(Role.admin))
    ) -> Response:
        check_csrf(who, csrf)
        try:
            result = request_erasure(store, config, email, origin="web")
        except ErasureError as exc:
            raise HTTPException(422, str(exc)) from None
        if result.created:
            ask_for_removals(result)
        return RedirectResponse(
            f"/app/erasures?done={'erasure' if result.created else 'erasure-again'}", status_code=303
        )

    @app.post("/customers/export", responses={**NEEDS, **BODY})
    def export(body: EmailBody, who: Principal = Depends(need(Role.admin))) -> dict[str, Any]:
        """What we hold about a person (a customers/data_request answer)."""
        try:
            return export_customer(store, body.email)
        except ErasureError as exc:
            raise HTTPException(422, str(exc)) from None

    # -- sign-in ---------------------------------------------------------------------------------------
    @app.get("/app/sign-in", response_class=HTMLResponse, include_in_schema=False)
    def sign_in_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "signin.html", {"principal": None})

    @app.post("/app/sign-in", include_in_schema=False)
    def sign_in(request: Request, token: Annotated[str, Form()]) -> Response:
        role = sessions.role_of(token)
        if role is None:
            context = {"principal": None, "error": "That token is not valid."}
            return templates.TemplateResponse(request, "signin.html", context, status_code=401)
        session_id, _ = sessions.open(role)
        answer = RedirectResponse("/app/", status_code=303)
        answer.set_cookie(
            COOKIE,
            session_id,
            httponly=True,
            samesite="strict",
            secure=secure_request(request),
            max_age=int(settings.session_hours * 3600),
            path="/",
        )
        return answer

    @app.post("/app/sign-out", include_in_schema=False)
    def sign_out(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        who = sessions.principal(request)
        if who is not None:
            check_csrf(who, csrf)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            sessions.close(cookie)
        answer = RedirectResponse("/app/sign-in", status_code=303)
        answer.delete_cookie(COOKIE, path="/")
        return answer

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/app/", status_code=303)

    # -- the earlier JSON answers (scripts use them) -----------------------------------------------------
    api = APIRouter()
    viewer = Depends(need(Role.viewer))

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/status", responses=NEEDS, dependencies=[viewer])
    def status() -> dict[str, Any]:
        """Last run per step and mapping, each mapping's last problem, erasures, owed syncs."""
        return status_report(store)

    @api.get("/status/history", responses=MISSING, dependencies=[viewer])
    def history(mapping: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        if mapping is not None and mapping not in config.mappings:
            raise HTTPException(404, f"no mapping named {mapping!r}")
        return history_rows(settings, mapping, limit)

    @api.get("/segments", responses=NEEDS, dependencies=[viewer])
    def segments() -> dict[str, int]:
        return store.segment_sizes()

    @api.get("/preview", responses=NEEDS, dependencies=[viewer])
    def preview() -> dict[str, Any]:
        """Every segment's size, joined and left, revenue share and overlaps, and each mapping's last
        sync, from the stored results of the last recompute (nothing is recomputed on request;
        `audience-sync preview` computes afresh at a chosen clock or for a changed config)."""
        return views.stored_preview(store, config)

    @api.get("/segments/{segment}/sample", responses=MISSING, dependencies=[viewer])
    def sample(segment: str, limit: Annotated[int, Query(ge=1, le=50)] = 10) -> list[str]:
        known = set(config.segments.resolved()) | set(store.segment_sizes())
        if segment not in known:
            raise HTTPException(404, f"no segment named {segment!r}")
        keys = sorted(store.segment_keys(segment))[:limit]
        return [mask_email(m.email) if m.email else mask_key(m.key) for m in store.members(keys).values()]

    @api.get("/mappings", responses=NEEDS, dependencies=[viewer])
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

    @api.get("/mappings/{name}/rejected", responses=MISSING, dependencies=[viewer])
    def rejected(name: str) -> list[dict[str, Any]]:
        if name not in config.mappings:
            raise HTTPException(404, f"no mapping named {name!r}")
        return [
            {
                "customer_key": mask_key(str(r["customer_key"])),
                "operation": r["operation"],
                "code": r["code"],
                "reason": r["reason"],
            }
            for r in store.rejected(name).values()
        ]

    @api.get("/mappings/{name}/progress", responses=MISSING, dependencies=[viewer])
    def live_progress(name: str) -> dict[str, Any]:
        """The running sync's counts, written by the worker after every batch (the page polls this)."""
        if name not in config.mappings:
            raise HTTPException(404, f"no mapping named {name!r}")
        return views.progress(store, name)

    app.include_router(api)
    app.include_router(webhook_router(settings, store, config, ask_for_removals))
    app.include_router(store_webhook_router(settings, store, config, WebhookCycles(settings, store, config)))
    if settings.api_docs:
        _serve_docs(app, need(Role.viewer))
    return app


def _title(status: int) -> str:
    return {401: "Sign in first", 403: "Not for your role", 404: "Not found", 422: "Not accepted"}.get(status, "Error")


def _register(
    app: FastAPI,
    view: View,
    need: Callable[[Role], Callable[[Request], Principal]],
    page: Callable[[Role], Callable[[Request], Principal]],
    built: Callable[[Callable[[], dict[str, Any]]], dict[str, Any]],
    render: Callable[..., HTMLResponse],
    extra: Callable[[str | None, dict[str, Any], str], dict[str, Any]],
) -> None:
    """The JSON twin and the page of one view, with the parameters its shape takes."""
    html_path = "/app/" if view.path == "/overview" else "/app" + view.path
    responses = MISSING if view.shape == "named" else NEEDS
    summary = (view.build.__doc__ or f"The data of the {view.template.removesuffix('.html')} page").strip()
    makers = {"named": _named, "runs": _runs, "plain": _plain}
    as_json, as_page = makers[view.shape](view, need, page, built, render, extra)
    app.add_api_route(view.path, as_json, methods=["GET"], responses=responses, summary=summary.splitlines()[0])
    app.add_api_route(html_path, as_page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)


Endpoints = tuple[Callable[..., dict[str, Any]], Callable[..., HTMLResponse]]


def _named(view: View, need: Any, page: Any, built: Any, render: Any, extra: Any) -> Endpoints:
    def as_json(
        name: str,
        page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
        who: Principal = Depends(need(view.role)),
    ) -> dict[str, Any]:
        result: dict[str, Any] = built(lambda: view.build(name, page_no))
        return result

    def as_page(
        request: Request,
        name: str,
        page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
        who: Principal = Depends(page(view.role)),
    ) -> HTMLResponse:
        data = built(lambda: view.build(name, page_no))
        result: HTMLResponse = render(request, who, view.template, data, **extra(name, data, view.template))
        return result

    return as_json, as_page


def _runs(view: View, need: Any, page: Any, built: Any, render: Any, extra: Any) -> Endpoints:
    def filtered(step: str | None, mapping: str | None, outcome: str | None, page_no: int) -> dict[str, Any]:
        result: dict[str, Any] = built(
            lambda: view.build(step=step or None, mapping=mapping or None, outcome=outcome or None, page=page_no)
        )
        return result

    def as_json(
        step: str | None = None,
        mapping: str | None = None,
        outcome: str | None = None,
        page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
        who: Principal = Depends(need(view.role)),
    ) -> dict[str, Any]:
        return filtered(step, mapping, outcome, page_no)

    def as_page(
        request: Request,
        step: str | None = None,
        mapping: str | None = None,
        outcome: str | None = None,
        page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
        who: Principal = Depends(page(view.role)),
    ) -> HTMLResponse:
        data = filtered(step, mapping, outcome, page_no)
        query = "".join(f"&{k}={v}" for k, v in data["filters"].items() if v)
        result: HTMLResponse = render(
            request, who, view.template, data, query=query, **extra(None, data, view.template)
        )
        return result

    return as_json, as_page


def _plain(view: View, need: Any, page: Any, built: Any, render: Any, extra: Any) -> Endpoints:
    def as_json(who: Principal = Depends(need(view.role))) -> dict[str, Any]:
        result: dict[str, Any] = built(view.build)
        return result

    def as_page(request: Request, who: Principal = Depends(page(view.role))) -> HTMLResponse:
        data = built(view.build)
        result: HTMLResponse = render(request, who, view.template, data, **extra(None, data, view.template))
        return result

    return as_json, as_page


def _serve_docs(app: FastAPI, viewer: Callable[[Request], Principal]) -> None:
    """OpenAPI description and Swagger UI behind the token, with the UI's files from the package."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(viewer)])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(viewer)])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="audience-sync control API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
