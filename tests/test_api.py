"""The control API's edges: tokens, answers that mask, errors without paths, webhooks' size and secret,
resync coalescing, docs, and an access log that goes through the redaction."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from tests.services import free_port, serve_asgi
from worker.api import MIN_TOKEN_LENGTH, TokenError, create_app
from worker.store import open_store

TOKEN = "api-test-token-0123456789abcdefghijkl"
SECRET = "hush-hush"


class Client(httpx.Client):
    queued: list[tuple[str, bool]]


def _config(tmp_path: Path) -> Path:
    return write_config(
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


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    db = f"sqlite:///{tmp_path / 's.sqlite3'}"
    store = open_store(db)
    seed_segment(store, "buyers", 3)
    store.record_rejections(
        "buyers-out",
        None,
        [{"identity": "x", "customer_key": "guest.buyer@example.com", "operation": "add", "code": "c", "reason": "r"}],
    )
    store.dispose()
    settings = make_settings(database_url=db, config=_config(tmp_path), api_token=TOKEN, shopify_webhook_secret=SECRET)
    queued: list[tuple[str, bool]] = []

    def enqueue(name: str, full: bool) -> str:
        queued.append((name, full))
        return f"task-{len(queued)}"

    app = create_app(settings, enqueue=enqueue)
    with serve_asgi(app) as url, Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        test_client.queued = queued
        yield test_client


def test_every_route_needs_the_token_and_an_empty_one_is_never_accepted(client: Client) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Basic " + TOKEN}):
        assert client.get("/segments", headers=headers).status_code == 401
    assert client.get("/segments", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert client.get("/segments").json() == {"buyers": 3}


@pytest.mark.parametrize("token", [None, "", "short-token"])
def test_the_api_refuses_to_start_without_a_long_token_and_says_how_to_make_one(
    tmp_path: Path, token: str | None
) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 's.sqlite3'}", api_token=token)
    with pytest.raises(TokenError) as caught:
        create_app(settings)
    message = str(caught.value)
    assert f"at least {MIN_TOKEN_LENGTH} characters" in message and "secrets.token_urlsafe" in message


def test_answers_mask_people_and_errors_carry_no_server_paths(client: Client, tmp_path: Path) -> None:
    assert client.get("/segments/buyers/sample").json() == ["m***@example.com"] * 3
    rejected = client.get("/mappings/buyers-out/rejected").json()
    assert rejected[0]["customer_key"] == "g***@example.com"
    unknown = client.get("/segments/nope/sample")
    assert unknown.status_code == 404 and "no segment named 'nope'" in unknown.json()["detail"]
    missing = client.post("/mappings/nope/resync")
    assert missing.status_code == 404
    for answer in (unknown, missing, client.get("/mappings/nope/rejected")):
        assert str(tmp_path) not in answer.text and ".toml" not in answer.text


def test_resyncs_are_coalesced_and_a_full_request_upgrades_a_pending_one(client: Client) -> None:
    first = client.post("/mappings/buyers-out/resync")
    assert first.status_code == 202 and first.json()["task_id"] == "task-1"
    again = client.post("/mappings/buyers-out/resync?full=true")
    assert again.status_code == 200 and again.json()["coalesced"] is True and again.json()["full"] is True
    assert client.queued == [("buyers-out", False)]  # one task; the owed request is now a full one
    status = client.get("/status").json()
    assert status["owed_syncs"] == [
        {
            "mapping": "buyers-out",
            "full": True,
            "reason": "full replace",
            "requested_at": status["owed_syncs"][0]["requested_at"],
        }
    ]


def test_with_the_broker_down_a_resync_answers_503_and_stays_owed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.sqlite3'}"
    settings = make_settings(database_url=db, config=_config(tmp_path), api_token=TOKEN)

    def down(name: str, full: bool) -> str:
        from kombu.exceptions import OperationalError

        raise OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    with serve_asgi(create_app(settings, enqueue=down)) as url:
        answer = httpx.post(f"{url}/mappings/buyers-out/resync", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 503
    assert "broker (Redis) did not answer" in answer.json()["detail"] and "next cycle" in answer.json()["detail"]
    store = open_store(db)
    assert [o.mapping for o in store.owed_syncs()] == ["buyers-out"]
    store.dispose()


def _signed(body: bytes) -> dict[str, str]:
    return {
        "X-Shopify-Hmac-Sha256": base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    }


def test_webhooks_refuse_forgeries_and_oversized_bodies_before_reading_them(client: Client) -> None:
    body = json.dumps(
        {"shop_domain": "example.myshopify.com", "customer": {"id": 9, "email": "a@example.com"}}
    ).encode()
    forged = client.post("/webhooks/shopify/customers/redact", content=body, headers={"X-Shopify-Hmac-Sha256": "x"})
    assert forged.status_code == 401  # Shopify requires 401 for an invalid signature
    huge = client.post(
        "/webhooks/shopify/customers/redact",
        content=b"{" + b" " * (300 * 1024) + b"}",
        headers={"X-Shopify-Hmac-Sha256": "x"},
    )
    assert huge.status_code == 413 and "256 KiB" in huge.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming too
        for _ in range(40):
            yield b" " * 10_000

    streamed = client.post(
        "/webhooks/shopify/customers/redact", content=chunks(), headers={"X-Shopify-Hmac-Sha256": "x"}
    )
    assert streamed.status_code == 413
    good = client.post(
        "/webhooks/shopify/customers/redact", content=body, headers=_signed(body) | {"X-Shopify-Webhook-Id": "w1"}
    )
    assert good.status_code == 200 and good.json()["erased"] is True
    other = json.dumps({"shop_domain": "someone-else.myshopify.com", "customer": {"id": 9}}).encode()
    foreign = client.post("/webhooks/shopify/customers/redact", content=other, headers=_signed(other))
    assert foreign.status_code == 200 and "not this deployment's shop" in foreign.json()["detail"]


def test_without_the_webhook_secret_webhooks_say_which_setting_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 's.sqlite3'}", config=_config(tmp_path), api_token=TOKEN
    )
    with caplog.at_level(logging.WARNING, logger="worker.webhooks"):
        app = create_app(settings, enqueue=lambda n, f: "t")
    assert any("AUDIENCE_SYNC_SHOPIFY_WEBHOOK_SECRET is not set" in r.getMessage() for r in caplog.records)
    with serve_asgi(app) as url:
        answer = httpx.post(f"{url}/webhooks/shopify/customers/redact", content=b"{}")
    assert answer.status_code == 503
    assert "AUDIENCE_SYNC_SHOPIFY_WEBHOOK_SECRET" in answer.json()["detail"]


def test_docs_are_off_by_default_and_served_offline_behind_the_token_when_on(client: Client, tmp_path: Path) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 's.sqlite3'}", config=_config(tmp_path), api_token=TOKEN, api_docs=True
    )
    with serve_asgi(create_app(settings, enqueue=lambda n, f: "t")) as url:
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert "/mappings/{name}/resync" in httpx.get(f"{url}/openapi.json", headers=auth).json()["paths"]
        page = httpx.get(f"{url}/docs", headers=auth).text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        assert httpx.get(f"{url}/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_every_line_the_api_process_writes_is_redacted_access_log_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    # this test's own client must not log the addresses it sends on purpose (the session scans our logs)
    client_log = logging.getLogger("httpx")
    monkeypatch.setattr(client_log, "level", client_log.level)  # restored after the test
    client_log.setLevel(logging.WARNING)  # setLevel, not the attribute: it clears the logger's cache
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "AUDIENCE_SYNC_API_TOKEN": TOKEN,
        "AUDIENCE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}",
        "AUDIENCE_SYNC_CONFIG": str(_config(tmp_path)),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "api", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.1)
        httpx.get(f"{base}/status?token=sekrit-in-the-url-123", headers={"Authorization": f"Bearer {TOKEN}"})
        httpx.get(f"{base}/status?access_token=sekrit-in-the-url-456")
        httpx.get(f"{base}/mappings/jane.doe@example.com/rejected", headers={"Authorization": f"Bearer {TOKEN}"})
        httpx.get(f"{base}/segments/jane%40example.com/sample", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    assert "GET /status?" in output  # the access log is there ...
    for secret in ("sekrit-in-the-url", "jane.doe@example.com", "jane%40example.com", TOKEN):
        assert secret not in output, output  # ... but it carries no token and no address
