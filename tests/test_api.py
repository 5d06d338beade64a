from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from tests.services import serve_asgi
from worker.api import create_app
from worker.store import open_store


class Client(httpx.Client):
    queued: list[tuple[str, bool]]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    config = write_config(
        tmp_path / "c.toml",
        f"""
        [destinations.out]
        type = "file"
        directory = "{tmp_path}"
        [[mappings]]
        name = "buyers-out"
        segment = "buyers"
        destination = "out"
        audience = "buyers"
        """,
    )
    db = f"sqlite:///{tmp_path / 's.sqlite3'}"
    seed_segment(open_store(db), "buyers", 3)
    settings = make_settings(database_url=db, config=config, api_token="s3cret", shopify_webhook_secret="hush-hush")
    queued: list[tuple[str, bool]] = []
    app = create_app(settings, enqueue=lambda name, full: queued.append((name, full)) or "task-1")
    with serve_asgi(app) as url, Client(base_url=url) as test_client:
        test_client.queued = queued
        yield test_client


def test_every_route_needs_the_token(client: Client) -> None:
    assert client.get("/segments").status_code == 401
    assert client.get("/segments", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/healthz").status_code == 200


def test_marketer_sees_sizes_masked_samples_and_can_trigger_a_full_replace(client: Client) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    assert client.get("/segments", headers=auth).json() == {"buyers": 3}
    sample = client.get("/segments/buyers/sample", headers=auth).json()
    assert sample == ["m***@example.com"] * 3
    response = client.post("/mappings/buyers-out/resync?full=true", headers=auth)
    assert response.status_code == 202
    assert client.queued == [("buyers-out", True)]
    assert client.post("/mappings/nope/resync", headers=auth).status_code == 404
    assert client.get("/preview").status_code == 401
    preview = client.get("/preview", headers=auth)
    assert preview.status_code == 200 and "segments" in preview.json()


def test_shopify_customers_redact_webhook_erases_the_customer(client: Client, tmp_path: Path) -> None:
    import base64
    import hashlib
    import hmac
    import json
    from datetime import UTC, datetime

    from connectors.records import Consent, CustomerRecord
    from worker.ingest import validate_customers

    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    person = CustomerRecord(
        customer_id="gid://shopify/Customer/9",
        source="shopify",
        email="Redact.Me@example.com",
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        email_consent=Consent.SUBSCRIBED,
    )
    store.upsert_customers(validate_customers([person]).customers)
    body = json.dumps(
        {
            "shop_id": 1,
            "shop_domain": "x.myshopify.com",
            "customer": {"id": 9, "email": "redact.me@example.com"},
            "orders_to_redact": [],
        }
    ).encode()
    good = base64.b64encode(hmac.new(b"hush-hush", body, hashlib.sha256).digest()).decode()

    forged = client.post(
        "/webhooks/shopify/customers/redact",
        content=body,
        headers={"X-Shopify-Hmac-Sha256": base64.b64encode(b"x" * 32).decode()},
    )
    assert forged.status_code == 401  # Shopify requires 401 for an invalid signature
    assert store.customers_frame()["email"].tolist() == ["redact.me@example.com"]

    answer = client.post(
        "/webhooks/shopify/customers/redact",
        content=body,
        headers={"X-Shopify-Hmac-Sha256": good, "Content-Type": "application/json"},
    )
    assert answer.status_code == 200 and answer.json()["erased"] is True
    assert store.customers_frame().empty
    assert client.queued == [("buyers-out", False)]  # every mapping re-syncs, removing the person
    assert store.suppressed()[0] == {hashlib.sha256(b"redact.me@example.com").hexdigest()}
    store.dispose()
