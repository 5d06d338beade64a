"""The marketer's web app over real HTTP: sign-in, cookies, roles, CSRF, pages and their JSON twins."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.kernel.records import Consent
from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from tests.services import serve_asgi
from worker.api import create_app
from worker.cycle import recompute
from worker.store import open_store

ADMIN = "admin-token-0123456789abcdefghijklmnopqr"
OPERATOR = "operator-token-0123456789abcdefghijklmno"
VIEWER = "viewer-token-0123456789abcdefghijklmnopq"


@dataclass
class Site:
    url: str
    queued: list[tuple[str, bool]]
    clients: list[httpx.Client]

    def browser(self, token: str | None = None, *, follow: bool = True) -> httpx.Client:
        """A client that keeps cookies, like a browser, signed in with ``token`` when given."""
        client = httpx.Client(base_url=self.url, follow_redirects=follow)
        self.clients.append(client)
        if token is not None:
            answer = client.post("/app/sign-in", data={"token": token})
            assert answer.status_code == 200 and answer.url.path == "/app/"
        return client


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = write_config(
        tmp_path / "c.toml",
        f"""
        [destinations.out]
        type = "file"
        directory = "{tmp_path / "aud"}"
        [[mappings]]
        name = "buyers-out"
        segment = "buyers"
        destination = "out"
        audience = "buyers"
        """,
    )
    db = f"sqlite:///{tmp_path / 's.sqlite3'}"
    store = open_store(db)
    seed_segment(store, "buyers", 12, consent=Consent.SUBSCRIBED)
    store.record_rejections(
        "buyers-out",
        None,
        [
            {
                "identity": "x",
                "customer_key": "guest@example.com",
                "operation": "add",
                "code": "refused",
                "reason": "why",
            }
        ],
    )
    store.dispose()
    settings = make_settings(
        database_url=db, config=config, api_token=ADMIN, operator_token=OPERATOR, viewer_token=VIEWER
    )
    queued: list[tuple[str, bool]] = []

    def enqueue(name: str, full: bool) -> str:
        queued.append((name, full))
        return f"task-{len(queued)}"

    with serve_asgi(create_app(settings, enqueue=enqueue)) as url:
        made = Site(url, queued, [])
        yield made
        for client in made.clients:
            client.close()


def test_pages_need_a_session_and_sign_in_sets_a_strict_http_only_cookie(site: Site) -> None:
    anonymous = site.browser(follow=False)
    assert anonymous.get("/app/").status_code == 303  # to the sign-in page
    assert anonymous.get("/app/").headers["location"] == "/app/sign-in"
    wrong = anonymous.post("/app/sign-in", data={"token": "not-a-token"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    answer = anonymous.post("/app/sign-in", data={"token": VIEWER})
    cookie = answer.headers["set-cookie"].lower()
    assert answer.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie.replace("samesite", "")  # plain HTTP here
    behind_https = anonymous.post("/app/sign-in", data={"token": VIEWER}, headers={"X-Forwarded-Proto": "https"})
    assert "; secure" in behind_https.headers["set-cookie"].lower()
    assert VIEWER not in answer.headers["set-cookie"]  # the cookie is a random id, never the token


def test_a_viewer_sees_no_trigger_and_the_server_refuses_one_anyway(site: Site) -> None:
    viewer = site.browser(VIEWER)
    page = viewer.get("/app/mappings/buyers-out")
    assert page.status_code == 200 and "Resync" not in page.text and "Full replace" not in page.text
    assert viewer.get("/app/mappings/buyers-out/resync").status_code == 403
    refused = viewer.post("/app/mappings/buyers-out/resync", data={"csrf": "x", "full": "false"})
    assert refused.status_code == 403
    bearer = httpx.post(f"{site.url}/mappings/buyers-out/resync", headers={"Authorization": f"Bearer {VIEWER}"})
    assert bearer.status_code == 403 and "viewer may not" in bearer.json()["detail"]
    assert viewer.get("/app/erasures").status_code == 403 and viewer.get("/app/settings").status_code == 403
    assert site.queued == []


def test_an_operator_confirms_and_triggers_and_every_form_needs_its_csrf_token(site: Site) -> None:
    operator = site.browser(OPERATOR)
    page = operator.get("/app/mappings/buyers-out")
    assert "Resync" in page.text and "Full replace" in page.text
    confirm = operator.get("/app/mappings/buyers-out/resync?full=true")
    assert "Every eligible member of the segment is sent again" in confirm.text
    csrf = confirm.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    forged = operator.post("/app/mappings/buyers-out/resync", data={"full": "true", "csrf": "forged"})
    assert forged.status_code == 403 and site.queued == []
    done = operator.post("/app/mappings/buyers-out/resync", data={"full": "true", "csrf": csrf})
    assert done.status_code == 200 and "Resync asked for" in done.text
    assert site.queued == [("buyers-out", True)]
    # the JSON API with a session cookie wants the token in a header (no cross-site form can set one)
    assert operator.post("/mappings/buyers-out/resync").status_code == 403
    assert operator.post("/mappings/buyers-out/resync", headers={"X-CSRF-Token": csrf}).status_code == 200  # owed


def test_every_page_has_a_json_twin_with_the_same_data(site: Site, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    from datetime import UTC, datetime

    from worker.config import load_config

    recompute(store, load_config(tmp_path / "c.toml"), datetime.now(UTC))
    store.dispose()
    admin = site.browser(ADMIN)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for path in (
        "/overview",
        "/segments/buyers",
        "/mappings/buyers-out",
        "/mappings/buyers-out/dry-run",
        "/runs",
        "/erasures",
        "/settings",
    ):
        page = admin.get("/app/" if path == "/overview" else "/app" + path)
        data = httpx.get(site.url + path, headers=auth)
        assert page.status_code == 200 and data.status_code == 200, path
        assert "@example.com" not in page.text.replace("m***@example.com", "").replace("g***@example.com", ""), path
    mapping = httpx.get(f"{site.url}/mappings/buyers-out", headers=auth).json()
    assert mapping["rejected"] == [
        {"customer": "g***@example.com", "operation": "add", "code": "refused", "reason": "why"}
    ]
    assert "why" in admin.get("/app/mappings/buyers-out").text
    segment = httpx.get(f"{site.url}/segments/buyers", headers=auth).json()
    assert segment["rule"] == "orders at least 1"
    assert httpx.get(f"{site.url}/segments/nope", headers=auth).status_code == 404
    assert admin.get("/app/segments/nope").status_code == 404
    assert "<svg" in admin.get("/app/").text  # size charts drawn on the server


def test_sign_out_ends_the_session(site: Site) -> None:
    viewer = site.browser(VIEWER)
    page = viewer.get("/app/")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = viewer.post("/app/sign-out", data={"csrf": csrf})
    assert out.url.path == "/app/sign-in"
    viewer.follow_redirects = False
    assert viewer.get("/app/").status_code == 303


def test_the_preview_api_answers_from_stored_results_without_recomputing(site: Site) -> None:
    """The store holds no orders at all: a recompute on request would find an empty `buyers`."""
    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {VIEWER}"}) as api:
        answer = api.get("/preview")
    assert answer.status_code == 200
    preview = answer.json()
    assert preview["segments"]["buyers"]["size"] == 12
    assert preview["mappings"]["buyers-out"]["segment"] == "buyers"
    assert "@" not in answer.text  # sizes and counts only: no member is named


def test_runs_are_filtered_by_step_mapping_and_outcome_and_paged(site: Site, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    made: dict[tuple[str, str], list[int]] = {}
    for n in range(45):
        mapping, outcome = ("buyers-out", "ok") if n % 3 else ("other", "failed")
        run = store.start_run("sync", mapping)
        store.finish_run(run, outcome, {"added": n}, "boom" if outcome == "failed" else None)
        made.setdefault((mapping, outcome), []).append(run)
    store.finish_run(store.start_run("pull"), "ok", {})
    store.dispose()
    auth = {"Authorization": f"Bearer {VIEWER}"}

    def runs(**params: object) -> dict[str, Any]:
        answer = httpx.get(f"{site.url}/runs", params=params, headers=auth)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    ok = runs(mapping="buyers-out", outcome="ok")
    assert ok["total"] == 30 and ok["pages"] == 2 and len(ok["runs"]) == 20
    assert {r["mapping"] for r in ok["runs"]} == {"buyers-out"} and {r["outcome"] for r in ok["runs"]} == {"ok"}
    second = runs(mapping="buyers-out", outcome="ok", page=2)
    ids = [r["run_id"] for r in ok["runs"] + second["runs"]]
    assert sorted(ids, reverse=True) == ids and set(ids) == set(made[("buyers-out", "ok")])  # newest first, no gaps
    problems = runs(outcome="problem")
    assert problems["total"] == 15 and all(r["error"] == "boom" for r in problems["runs"])
    assert runs(step="pull")["total"] == 1
    page = site.browser(VIEWER).get("/app/runs", params={"mapping": "other", "outcome": "failed"})
    assert page.status_code == 200 and "boom" in page.text
