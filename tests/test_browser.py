"""The marketer's web app in a real browser (Playwright driving Debian's Chromium), with screenshots.

A marketer signs in, reads a segment, runs a dry run, triggers a resync and watches it finish (a
worker thread runs the sync the app asked for, and the page's live progress follows it), reads a
rejected member's reason; a viewer gets no trigger and the server refuses one anyway. Screenshots go
to the test's folder, and to ``AUDIENCE_SYNC_SCREENSHOTS`` when set (the README's come from there).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.kernel.records import Consent
from connectors.mailchimp.emulator import MailchimpEmulator
from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from tests.services import serve_asgi
from worker.api import create_app
from worker.config import load_config
from worker.cycle import sync_mapping
from worker.factory import make_runtime
from worker.store import open_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here: install Debian's `chromium` (.ci/run does, when it runs as root)"
)
OPERATOR = "operator-token-for-the-browser-0123456789"
VIEWER = "viewer-token-for-the-browser-0123456789ab"
ADMIN = "admin-token-for-the-browser-0123456789abcd"


@pytest.fixture
def shop_site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with MailchimpEmulator(api_key="browser-key-us1") as mailchimp:
        mailchimp.create_list("L1")
        for n in (0, 1):
            mailchimp.add_member("L1", f"member{n}@example.com", status="unsubscribed")
        config_path = write_config(
            tmp_path / "c.toml",
            f"""
            [destinations.out]
            type = "file"
            directory = "{tmp_path / "aud"}"
            batch_size = 15
            batch_delay = 0.15
            [destinations.mc]
            type = "mailchimp"
            base_url = "{mailchimp.url}/3.0"
            [[mappings]]
            name = "buyers-file"
            segment = "buyers"
            destination = "out"
            audience = "buyers"
            [[mappings]]
            name = "buyers-mailchimp"
            segment = "buyers"
            destination = "mc"
            audience = "L1"
            options = {{ tag = "buyers" }}
            """,
        )
        db = f"sqlite:///{tmp_path / 's.sqlite3'}"
        settings = make_settings(
            database_url=db,
            config=config_path,
            api_token=ADMIN,
            operator_token=OPERATOR,
            viewer_token=VIEWER,
            secrets={"AUDIENCE_SYNC_MAILCHIMP_API_KEY": "browser-key-us1"},
        )
        config = load_config(config_path)
        store = open_store(db)
        seed_segment(store, "buyers", 120, consent=Consent.SUBSCRIBED)
        sync_mapping(store, config, settings, make_runtime(settings), "buyers-mailchimp")  # two are refused
        workers: list[threading.Thread] = []

        def worker_runs_it(name: str, full: bool) -> str:
            thread = threading.Thread(
                target=sync_mapping, args=(store, config, settings, make_runtime(settings), name), kwargs={"full": full}
            )
            thread.start()
            workers.append(thread)
            return f"task-{len(workers)}"

        with serve_asgi(create_app(settings, enqueue=worker_runs_it)) as url:
            yield {"url": url, "store": store, "dir": tmp_path}
        for thread in workers:
            thread.join(30)
        store.dispose()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


def _shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    if target := os.environ.get("AUDIENCE_SYNC_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def _sign_in(browser: Any, url: str, token: str) -> Any:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    offline: list[str] = []
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(url)
            else (offline.append(route.request.url), route.abort())
        ),
    )
    page = context.new_page()
    page.offline_requests = offline
    page.goto(f"{url}/app/")
    assert page.url.endswith("/app/sign-in")
    page.get_by_label("Access token").fill(token)
    page.keyboard.press("Enter")  # forms work from the keyboard
    page.wait_for_url(f"{url}/app/")
    return page


def test_an_operator_reads_dry_runs_resyncs_and_watches_it_finish(shop_site: dict[str, Any], browser: Any) -> None:
    url, folder = shop_site["url"], shop_site["dir"]
    page = _sign_in(browser, url, OPERATOR)
    assert page.get_by_role("heading", name="Overview").is_visible()
    _shot(page, folder, "overview")

    page.get_by_role("link", name="buyers", exact=True).first.click()
    assert page.locator("#size").inner_text() == "120"
    assert "orders at least 1" in page.locator(".rule").inner_text()
    _shot(page, folder, "segment")

    page.goto(f"{url}/app/mappings/buyers-mailchimp")
    rejected = page.locator("tr.rejected")
    assert rejected.count() == 2 and "unsubscribed" in rejected.first.inner_text()
    assert "@example.com" not in rejected.first.inner_text().replace("m***@example.com", "")

    page.goto(f"{url}/app/mappings/buyers-file")
    page.get_by_role("link", name="Dry run").click()
    summary = " ".join(page.locator("#dry-run-summary").inner_text().split())
    assert "Nothing was sent. The next sync would add 120 and remove 0 members" in summary
    _shot(page, folder, "dry-run")
    page.go_back()

    page.get_by_role("link", name="Resync", exact=True).click()
    assert "differences since the last sync are sent now" in page.content()
    page.get_by_role("button", name="Yes, resync now").click()
    assert page.get_by_role("status").inner_text().startswith("Resync asked for")
    page.wait_for_function("document.getElementById('progress-text').textContent.includes('syncing')", timeout=15_000)
    _shot(page, folder, "mapping-progress")
    page.wait_for_function(
        "document.getElementById('progress-text').textContent.includes('last outcome ok')", timeout=30_000
    )
    assert "added 120" in page.locator("#progress-text").inner_text()
    _shot(page, folder, "mapping")
    assert page.offline_requests == []  # nothing fetched from anywhere but the app itself


def test_a_viewer_cannot_trigger(shop_site: dict[str, Any], browser: Any) -> None:
    url = shop_site["url"]
    page = _sign_in(browser, url, VIEWER)
    page.goto(f"{url}/app/mappings/buyers-file")
    assert page.get_by_role("link", name="Resync", exact=True).count() == 0
    assert page.get_by_role("link", name="Full replace").count() == 0
    answer = page.request.post(f"{url}/app/mappings/buyers-file/resync", form={"csrf": "x", "full": "true"})
    assert answer.status == 403
    page.goto(f"{url}/app/mappings/buyers-file/resync")
    assert "Not for your role" in page.content()


def test_an_admin_erases_someone_from_the_browser(shop_site: dict[str, Any], browser: Any) -> None:
    url = shop_site["url"]
    page = _sign_in(browser, url, ADMIN)
    page.get_by_role("link", name="Erasure").click()
    page.get_by_label("Email address of the person to erase").fill("member5@example.com")
    page.get_by_role("button", name="Erase everywhere").click()
    assert "Erasure recorded" in page.get_by_role("status").inner_text()
    assert "member5" not in page.content()
    assert page.locator("table code").first.inner_text().endswith("…")
    _shot(page, shop_site["dir"], "erasures")
