"""Store webhooks over real HTTP into a real store: kept before the answer, deduplicated, processed by
the pull's rules after it, and turned into a debounced cycle that moves the audiences."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from connectors.kernel.identifiers import sha256_hex
from connectors.shopify.emulator import ShopifyEmulator
from connectors.shopify.synthetic import Node, SyntheticStore, iso
from connectors.shopify.webhook_emulator import WebhookSubscriptions, new_order, rest_customer, sign
from tests.conftest import make_settings
from tests.services import serve_asgi
from tests.shopify_schema import query_problems
from worker import store_webhooks
from worker.api import create_app
from worker.config import load_config
from worker.runner import run_cycle
from worker.sandbox import Sandbox
from worker.store import Store, open_store, schema
from worker.webhook_subscriptions import CREATE_SUBSCRIPTION, LIST_SUBSCRIPTIONS, register_inline

NOW = datetime.now(UTC).replace(microsecond=0)
SECRET = "hush-hush"
TOKEN = "t" * 40
CONFIG = """
[source]
type = "shopify"
shop_url = "{shop}"

[destinations.files]
type = "file"
directory = "{aud}"
identifier = "email_sha256"
audience_kind = "ads"

[destinations.newsletter_file]
type = "file"
directory = "{aud}"
identifier = "email"
audience_kind = "email"

[[mappings]]
name = "engaged-30d-file"
segment = "engaged_30d"
destination = "files"
audience = "engaged_30d"

[[mappings]]
name = "newsletter-file"
segment = "newsletter_subscribers"
destination = "newsletter_file"
audience = "newsletter_subscribers"
"""


@dataclass
class Shop:
    store: Store
    shop: SyntheticStore
    api: httpx.Client
    aud: Path

    def audience(self, name: str) -> set[str]:
        path = self.aud / f"{name}.csv"
        if not path.exists():
            return set()
        with path.open(encoding="utf-8") as handle:
            return {row[0] for n, row in enumerate(csv.reader(handle)) if n and row}


@pytest.fixture
def world(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    """A store after one cycle of a 300-customer shop; the control API over it (no broker at all)."""
    monkeypatch.setattr(store_webhooks, "DEBOUNCE_SECONDS", 0.5)
    shop = SyntheticStore(seed=5, customers=300, now=NOW - timedelta(minutes=5))
    aud = tmp_path / "aud"
    pulled = tmp_path / "pull.toml"
    pulled.write_text(CONFIG.format(shop="sandbox", aud=aud), encoding="utf-8")
    served = tmp_path / "api.toml"
    served.write_text(CONFIG.format(shop="https://example.myshopify.com", aud=aud), encoding="utf-8")
    settings = make_settings(
        database_url=database_url,
        api_token=TOKEN,
        shopify_webhook_secret=SECRET,
        redis_url="redis://127.0.0.1:1/0",  # nothing listens: the API is on its own (embedded mode)
        config=served,
    )
    store = open_store(database_url)
    with Sandbox(NOW, store=shop) as sandbox:
        config, resolved = sandbox.resolve(load_config(pulled), settings)
        run_cycle(store, config, resolved, now=NOW)
    app = create_app(settings)
    with serve_asgi(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield Shop(store, shop, client, aud)
    store.dispose()


def deliver(api: httpx.Client, topic: str, payload: Any, webhook_id: str, *, secret: str = SECRET) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Topic": topic,
        "Content-Type": "application/json",
    }
    return api.post(f"/webhooks/shopify/{topic}", content=body, headers=headers)


def wait_for(check: Callable[[], bool], seconds: float = 60.0) -> None:
    """Until ``check`` holds (a few seconds on a quiet machine; the bound only ends a hung wait, and is
    generous because a loaded 2-core CI machine runs the embedded cycles several times slower)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {seconds:.0f} s")
        time.sleep(0.1)


def processed(world: Shop, *ids: str) -> Callable[[], bool]:
    def check() -> bool:
        outcomes = world.store.inbox_outcomes()
        return all(i in outcomes and outcomes[i]["processed"] for i in ids)

    return check


def email_of(customer: Node) -> str:
    return str(customer["defaultEmailAddress"]["emailAddress"])


def not_engaged(world: Shop, count: int) -> list[Node]:
    engaged = world.store.segment_keys("engaged_30d")
    return [c for c in world.shop.customers if c["defaultEmailAddress"] and c["id"] not in engaged][:count]


def runs(world: Shop, kind: str) -> int:
    with world.store.engine.connect() as conn:
        return len(conn.execute(select(schema.runs.c.id).where(schema.runs.c.kind == kind)).all())


def test_a_bad_signature_is_refused_and_nothing_is_kept(world: Shop) -> None:
    customer = not_engaged(world, 1)[0]
    answer = deliver(world.api, "orders/create", new_order(customer, 9_000_001, NOW), "bad-1", secret="wrong")
    assert answer.status_code == 401
    unsigned = world.api.post("/webhooks/shopify/orders/create", content=b"{}", headers={"X-Shopify-Webhook-Id": "x"})
    assert unsigned.status_code == 401
    assert world.store.inbox_outcomes() == {}


def test_an_order_makes_the_customer_engaged_and_lands_in_the_audience_with_the_payload_cleared(world: Shop) -> None:
    customer = not_engaged(world, 1)[0]
    digest = sha256_hex(email_of(customer))
    assert digest not in world.audience("engaged_30d")
    answer = deliver(world.api, "orders/create", new_order(customer, 9_000_002, NOW), "order-1")
    assert answer.status_code == 200 and answer.json()["received"] is True

    wait_for(lambda: digest in world.audience("engaged_30d"))
    assert customer["id"] in world.store.segment_keys("engaged_30d")
    outcome = world.store.inbox_outcomes()["order-1"]
    assert outcome == {"topic": "orders/create", "outcome": "stored", "processed": True, "payload_held": False}
    last = world.store.last_runs()
    assert any(r.kind == "webhook" and r.status == "ok" and r.counts["webhooks"] == 1 for r in last)


def test_a_duplicate_is_stored_once_and_an_older_delivery_changes_nothing(world: Shop) -> None:
    customer = not_engaged(world, 1)[0]
    newer = new_order(customer, 9_000_003, NOW)
    newer["current_total_price_set"]["shop_money"]["amount"] = "99.00"
    older = json.loads(json.dumps(newer))
    older["updated_at"] = iso(NOW - timedelta(hours=1))
    older["current_total_price_set"]["shop_money"]["amount"] = "1.00"

    assert deliver(world.api, "orders/updated", newer, "upd-new").json()["received"] is True
    again = deliver(world.api, "orders/updated", newer, "upd-new")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    wait_for(processed(world, "upd-new"))
    assert deliver(world.api, "orders/updated", older, "upd-old").status_code == 200
    wait_for(processed(world, "upd-old"))

    with world.store.engine.connect() as conn:
        inbox = conn.execute(select(schema.webhook_inbox.c.webhook_id)).scalars().all()
        total = conn.execute(
            select(schema.orders.c.total).where(schema.orders.c.order_id == newer["admin_graphql_api_id"])
        )
        assert total.scalar_one() == 99.0
    assert sorted(inbox) == ["upd-new", "upd-old"]
    assert world.store.inbox_outcomes()["upd-old"]["outcome"] == "stale: older than the stored version"


def test_a_burst_of_orders_becomes_a_few_cycles(world: Shop) -> None:
    customers = not_engaged(world, 150)
    recomputes = runs(world, "recompute")
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda n: deliver(world.api, "orders/create", new_order(customers[n], 9_100_000 + n, NOW), f"b-{n}"),
                range(len(customers)),
            )
        )
    assert all(a.status_code == 200 for a in answers)
    digests = {sha256_hex(email_of(c)) for c in customers}
    wait_for(lambda: digests <= world.audience("engaged_30d"), 120)
    assert runs(world, "recompute") - recomputes <= 6  # 150 deliveries, not 150 cycles
    assert world.store.inbox_pending_count() == 0


def test_consent_moves_only_with_the_consent_topic(world: Shop) -> None:
    subscribed = [
        c for c in world.shop.customers if (c["defaultEmailAddress"] or {}).get("marketingState") == "SUBSCRIBED"
    ]
    customer = subscribed[0]
    email = email_of(customer)
    assert email in world.audience("newsletter_subscribers")
    # customers/update carries no consent since 2025-01: the stored consent stays
    body = {**rest_customer(customer), "updated_at": iso(NOW), "first_name": "Renamed"}
    deliver(world.api, "customers/update", body, "cu-1")
    wait_for(processed(world, "cu-1"))
    assert world.store.stored_consents([customer["id"]])[customer["id"]][0] == "SUBSCRIBED"

    consent = {
        "customer_id": int(customer["id"].rsplit("/", 1)[1]),
        "email_address": email,
        "email_marketing_consent": {"state": "unsubscribed", "opt_in_level": None, "consent_updated_at": iso(NOW)},
    }
    deliver(world.api, "customers_email_marketing_consent/update", consent, "consent-1")
    wait_for(lambda: email not in world.audience("newsletter_subscribers"))
    assert world.store.inbox_outcomes()["consent-1"]["outcome"] == "consent applied"


def test_a_deleted_customer_leaves_the_list(world: Shop) -> None:
    orderless = [
        c
        for c in world.shop.customers
        if (c["defaultEmailAddress"] or {}).get("marketingState") == "SUBSCRIBED" and not world.shop.orders_of(c["id"])
    ]
    customer = orderless[0]
    assert email_of(customer) in world.audience("newsletter_subscribers")
    deliver(world.api, "customers/delete", {"id": int(customer["id"].rsplit("/", 1)[1])}, "del-1")
    wait_for(lambda: email_of(customer) not in world.audience("newsletter_subscribers"))
    assert world.store.stored_consents([customer["id"]]) == {}


def test_an_erasure_drops_the_persons_pending_deliveries(world: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    customer = not_engaged(world, 1)[0]
    email = email_of(customer)
    store = world.store
    # kept, not processed yet: the erasure comes first (a real erasure, as the control API records it)
    assert store.inbox_add(
        "late-1",
        "orders/create",
        json.dumps(new_order(customer, 9_000_004, NOW)),
        email_sha256=sha256_hex(email),
        customer_id=None,
    )
    assert store.inbox_add(
        "late-2", "customers/update", json.dumps(rest_customer(customer)), email_sha256=None, customer_id=customer["id"]
    )
    from worker.erasure import request_erasure

    request_erasure(store, load_config(None), email, origin="api")
    assert store.inbox_outcomes() == {}
    # a delivery that arrives after the erasure is dropped when processed, and says so
    deliver(world.api, "orders/create", new_order(customer, 9_000_005, NOW), "after-1")
    wait_for(processed(world, "after-1"))
    assert store.inbox_outcomes()["after-1"]["outcome"] == "dropped: the person was erased"
    with store.engine.connect() as conn:
        assert (
            conn.execute(select(schema.orders.c.order_id).where(schema.orders.c.customer_id == customer["id"])).all()
            == []
        )


def test_a_malformed_body_is_a_counted_problem_not_a_crash(world: Shop) -> None:
    customer = not_engaged(world, 2)
    broken = new_order(customer[0], 9_000_006, NOW)
    del broken["current_total_price_set"]
    strange = new_order(customer[1], 9_000_007, NOW)
    strange["current_total_price_set"]["shop_money"]["currency_code"] = "XXX"
    assert deliver(world.api, "orders/create", broken, "bad-body").status_code == 200
    assert deliver(world.api, "orders/create", strange, "bad-currency").status_code == 200
    assert deliver(world.api, "orders/create", [1, 2], "not-an-object").status_code == 400
    wait_for(processed(world, "bad-body", "bad-currency"))

    outcomes = world.store.inbox_outcomes()
    assert outcomes["bad-body"]["outcome"].startswith("rejected: non-numeric or missing")
    assert outcomes["bad-currency"]["outcome"] == "rejected: unknown currency 'XXX'"
    assert not any(o["payload_held"] for o in outcomes.values())

    def finished() -> bool:
        return any(r.kind == "webhook" and r.status != "running" for r in world.store.recent_runs(20))

    wait_for(finished)
    run = next(r for r in world.store.recent_runs(20) if r.kind == "webhook")
    assert run.status == "partial" and run.counts["bad_records"] == 2
    reasons = [reason for _, reason in world.store.problems(run.id)]
    assert any(r.startswith("webhook body not usable") for r in reasons)


def test_register_is_idempotent_and_valid_against_the_schema(tmp_path: Path) -> None:
    assert query_problems(LIST_SUBSCRIPTIONS) == [] and query_problems(CREATE_SUBSCRIPTION) == []
    emulator = ShopifyEmulator(SyntheticStore(seed=1, customers=5, now=NOW))
    subscriptions = WebhookSubscriptions().install(emulator)
    emulator.start()
    try:
        config = tmp_path / "c.toml"
        config.write_text(CONFIG.format(shop=emulator.url, aud=tmp_path), encoding="utf-8")
        secrets = {"AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": SecretStr(emulator.token)}
        settings = make_settings(config=config, secrets=secrets)
        lines: list[str] = []
        first = register_inline(settings, "https://sync.example.com", lines.append)
        assert len(first.created) == 7 and not first.existing and not first.refused
        second = register_inline(settings, "https://sync.example.com", lines.append)
        assert len(second.existing) == 7 and not second.created
        assert len(subscriptions.subscriptions) == 7
        assert {s["uri"] for s in subscriptions.subscriptions} >= {
            "https://sync.example.com/webhooks/shopify/orders/create",
            "https://sync.example.com/webhooks/shopify/customers_email_marketing_consent/update",
        }
        assert any(line.startswith("exists") for line in lines)
    finally:
        emulator.stop()
