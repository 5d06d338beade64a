"""Erasure is one durable state machine: the CLI, the API and Shopify's webhooks all end with the person
gone from the store, every destination and every file, the audit holding only a hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.kernel.identifiers import sha256_hex
from connectors.shopify.synthetic import SyntheticStore
from tests.conftest import make_settings
from tests.helpers import audience_now
from tests.services import serve_asgi
from tests.test_cycle_e2e import _sandbox_config
from worker.api import create_app
from worker.config import AppConfig
from worker.cycle import pull
from worker.erasure import erase_now, export_customer
from worker.erasure_report import render_erasure
from worker.factory import make_runtime
from worker.runner import run_cycle
from worker.sandbox import Sandbox
from worker.settings import Settings
from worker.store import Store, open_store, schema

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
TOKEN = "t" * 40
SECRET = "hush-hush"


@dataclass
class World:
    store: Store
    config: AppConfig
    settings: Settings
    sandbox: Sandbox
    shop: SyntheticStore
    files: Path


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    """A store after one cycle of the sandbox config: files, Mailchimp and Meta all hold people."""
    shop = SyntheticStore(seed=3, customers=200, now=NOW)
    settings = make_settings(database_url=database_url, api_token=TOKEN, shopify_webhook_secret=SECRET)
    with Sandbox(NOW, store=shop) as sandbox:
        config, resolved = sandbox.resolve(_sandbox_config(tmp_path), settings)
        store = open_store(database_url)
        run_cycle(store, config, resolved, now=NOW)
        yield World(store, config, resolved, sandbox, shop, tmp_path / "aud")
        store.dispose()


def subscribed_buyer(world: World) -> str:
    store = world.store
    newsletter = store.segment_keys("newsletter_subscribers")
    buyers = store.members(store.segment_keys("buyers"))
    email = next(m.email for k, m in sorted(buyers.items()) if k in newsletter and m.email)
    assert email is not None
    return email


def holdings(world: World, email: str) -> dict[str, bool]:
    """Per mapping, whether the destination's real state still names the person (email or hash)."""
    digest = sha256_hex(email)
    return {
        name: any(email == i or digest in i for i in audience_now(world.sandbox, world.config, name))
        for name in world.config.mappings
    }


def text_anywhere(world: World, needle: str) -> list[str]:
    """Tables (every text column) and files (audiences, the SQLite file and its WAL) that hold ``needle``."""
    found = []
    with world.store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                if any(isinstance(v, str) and needle in v for v in row):
                    found.append(table.name)
                    break
    folders = [world.files]
    url = world.store.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        folders.append(Path(url.database).parent)
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and needle.encode() in path.read_bytes():
                found.append(str(path.name))
    return found


def test_cli_erasure_removes_a_person_everywhere_and_says_where_they_were(world: World) -> None:
    email = subscribed_buyer(world)
    before = holdings(world, email)
    assert before["buyers-file"] and before["newsletter-mailchimp"] and before["buyers-meta"]

    report = erase_now(world.store, world.config, world.settings, make_runtime(world.settings), email.upper(), NOW)

    assert report.complete and report.request.orders_deleted > 0
    assert holdings(world, email) == dict.fromkeys(world.config.mappings, False)
    text = render_erasure(report)
    for name, held in before.items():
        assert (f"{name}: was a member" in text) == held, text
        assert (f"{name}: was not a member" in text) == (not held), text
    assert "erasure complete" in text
    # nothing names the person: no table, no audience file, no page of the SQLite file or its log
    assert text_anywhere(world, email) == []
    # the audit row holds the hash, and nothing else does (the SQLite file holds that table)
    assert set(text_anywhere(world, sha256_hex(email))) - {"store.sqlite3"} == {"erasures"}
    progress = world.store.erasures()[0]
    assert progress.status == "complete" and all(left == 0 for _, left in progress.mappings.values())

    # a later re-read of the whole history does not bring them back
    again = pull(world.store, world.config, world.settings, make_runtime(world.settings), reread_hours=24 * 1200)
    assert again.suppressed > 0
    assert text_anywhere(world, email) == []


def test_erasing_an_address_held_nowhere_says_so_and_a_second_erasure_is_a_no_op(world: World) -> None:
    runtime = make_runtime(world.settings)
    nobody = erase_now(world.store, world.config, world.settings, runtime, "nobody@example.org", NOW)
    assert nobody.complete and not nobody.request.anything_held
    assert "nothing was held for this address" in render_erasure(nobody)

    email = subscribed_buyer(world)
    first = erase_now(world.store, world.config, world.settings, runtime, email, NOW)
    second = erase_now(world.store, world.config, world.settings, runtime, email, NOW)
    assert second.request.erasure_id == first.request.erasure_id and not second.request.created
    assert "erased before" in render_erasure(second)
    assert len(world.store.erasures()) == 2  # "nobody" and the person, no row for the repeat


def test_an_additive_mapping_still_removes_an_erased_person(world: World) -> None:
    email = subscribed_buyer(world)
    mappings = {
        name: m.model_copy(update={"mode": "additive"}) if name == "buyers-file" else m
        for name, m in world.config.mappings.items()
    }
    config = world.config.model_copy(update={"mappings": mappings})
    report = erase_now(world.store, config, world.settings, make_runtime(world.settings), email, NOW)
    assert report.complete and not holdings(world, email)["buyers-file"]


def signed(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


def webhook(client: httpx.Client, topic: str, payload: dict[str, Any], webhook_id: str) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"X-Shopify-Hmac-Sha256": signed(body), "X-Shopify-Webhook-Id": webhook_id, "X-Shopify-Topic": topic}
    return client.post(f"/webhooks/shopify/{topic}", content=body, headers=headers)


def down(mapping: str, full: bool) -> str:
    raise ConnectionError("Redis is down")


@pytest.fixture
def api(world: World) -> Iterator[httpx.Client]:
    """The control API over the world's store, with a broker that never answers."""
    app = create_app(world.settings.model_copy(update={"config": None}), enqueue=down)
    with serve_asgi(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_webhook_erasure_answers_at_once_without_redis_and_completes_by_the_normal_sync(
    world: World, api: httpx.Client
) -> None:
    email = subscribed_buyer(world)
    customer = next(c for c in world.shop.customers if (c["defaultEmailAddress"] or {}).get("emailAddress") == email)
    payload = {
        "shop_id": 1,
        "shop_domain": "sandbox.myshopify.com",
        "customer": {"id": int(customer["id"].rsplit("/", 1)[1]), "email": email},
        "orders_to_redact": [],
    }
    answer = webhook(api, "customers/redact", payload, "wh-1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["erased"] is True

    # recorded at once, by hash and customer ids only, even while the removals are pending
    progress = api.get("/erasures").json()["erasures"][0]
    assert progress["status"] == "pending" and progress["email_sha256"] == sha256_hex(email)
    assert {m for m, p in progress["mappings"].items() if p["status"] == "pending"} == {
        name for name, held in holdings(world, email).items() if held
    }
    # only what the destinations must still be told to remove names them (and the audiences themselves)
    tables = {t.name for t in schema.metadata.sorted_tables}
    assert set(text_anywhere(world, email)) & tables <= {"acknowledged"}
    assert email not in json.dumps(api.get("/status").json())

    # Shopify retries, and may deliver twice: nothing changes
    assert webhook(api, "customers/redact", payload, "wh-1").json() == {
        "duplicate": True,
        "detail": "this delivery was processed before",
    }
    assert webhook(api, "customers/redact", payload, "wh-2").json()["already_erased"] is True
    assert len(api.get("/erasures").json()["erasures"]) == 1

    # the next cycle's normal syncs remove them, whichever process runs them
    run_cycle(world.store, world.config, world.settings, now=NOW)
    assert api.get("/erasures").json()["erasures"][0]["status"] == "complete"
    assert holdings(world, email) == dict.fromkeys(world.config.mappings, False)
    assert text_anywhere(world, email) == []


def test_data_request_is_recorded_and_the_export_holds_what_we_keep(world: World, api: httpx.Client) -> None:
    email = subscribed_buyer(world)
    payload = {"shop_id": 1, "shop_domain": "x.myshopify.com", "customer": {"id": 1, "email": email}}
    answer = webhook(api, "customers/data_request", payload, "dr-1")
    assert answer.status_code == 200 and answer.json()["recorded"] is True
    assert webhook(api, "customers/data_request", payload, "dr-1").json()["duplicate"] is True

    export = api.post("/customers/export", json={"email": email}).json()
    assert export["customers"][0]["email"] == email
    assert export["orders"] and all(order["lines"] is not None for order in export["orders"])
    assert "buyers" in export["segments"]
    assert {d["mapping"] for d in export["destinations"]} >= {"buyers-file", "newsletter-mailchimp"}
    assert world.store.data_requests()[0]["exported_at"] is not None
    assert export == export_customer(world.store, email.upper()) | {}


def test_shop_redact_erases_everything_and_empties_every_audience(world: World, api: httpx.Client) -> None:
    answer = webhook(api, "shop/redact", {"shop_id": 1, "shop_domain": "x.myshopify.com"}, "shop-1")
    assert answer.status_code == 200 and answer.json()["erased"] is True
    assert world.store.counts() == {"orders": 0, "customers": 0}
    for name in world.config.mappings:
        from worker.cycle import sync_mapping

        sync_mapping(world.store, world.config, world.settings, make_runtime(world.settings), name, now=NOW)
    assert all(not audience_now(world.sandbox, world.config, name) for name in world.config.mappings)
    assert api.get("/erasures").json()["erasures"][0]["status"] == "complete"
    assert webhook(api, "shop/redact", {"shop_id": 1, "shop_domain": "x.myshopify.com"}, "shop-1").json()["duplicate"]
