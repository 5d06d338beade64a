"""Expiring offline tokens: refreshed before expiry or on a 401, rotated pairs stored encrypted, a refused
refresh needs a person; custom-app tokens as before. Real HTTP against the emulator, real stores."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from connectors.kernel.credentials import TokenPair
from connectors.kernel.emulator import Faults, Scripted
from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
from connectors.shopify.oauth_emulator import ACCESS_PREFIX, REFRESH_PREFIX, OAuthTokens
from connectors.shopify.synthetic import SyntheticStore
from connectors.shopify.tokens import REFRESH_MARGIN, ShopifyTokens
from tests.conftest import make_settings
from tests.helpers import write_config
from worker.config import load_config
from worker.credentials import SqlCredentials, credential_problems
from worker.factory import make_runtime
from worker.pull import PullResult, pull
from worker.settings import Settings
from worker.status import render_status, status_report
from worker.store import Store, open_store, schema

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CLIENT_ID, CLIENT_SECRET = "test-client-id", "oauth-client-s3cret"
KEY = Fernet.generate_key().decode()


@dataclass
class Wall:
    """The wall clock of both sides; each GraphQL request moves it by ``step``."""

    now: datetime = NOW
    step: timedelta = timedelta(0)

    def read(self) -> datetime:
        return self.now


@dataclass
class Shop:
    emulator: ShopifyEmulator
    oauth: OAuthTokens
    wall: Wall
    config: Path
    granted: dict[str, Any] = field(default_factory=dict)

    def statuses(self) -> list[int]:
        return [r.status for r in self.emulator.log if r.path.endswith("graphql.json")]


@pytest.fixture
def shop(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Shop]:
    wall = Wall()
    faults = Faults()
    emulator = ShopifyEmulator(SyntheticStore(seed=5, customers=40, now=NOW), faults=faults)
    oauth = OAuthTokens(emulator, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, now=wall.read)
    expire_after: int | None = getattr(request, "param", None)
    if expire_after is not None:  # the access token dies early (revoked by Shopify, a clock skew)
        faults.script.append(
            Scripted("POST", "graphql", "hook", after=expire_after, hook=lambda _r: oauth.expire_access())
        )
    check = emulator.token_check
    assert check is not None

    def ticking(sent: str | None) -> bool:
        wall.now += wall.step
        return check(sent)

    emulator.token_check = ticking
    emulator.start()
    config = write_config(
        tmp_path / "tokens.toml",
        "",
        shop_url=emulator.url,
        source_options=f'client_id = "{CLIENT_ID}"\npage_size = 5\nbulk_backfill = false',
    )
    try:
        yield Shop(emulator, oauth, wall, config, oauth.grant())
    finally:
        emulator.stop()


def env(shop: Shop, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "config": shop.config,
        "secret_key": KEY,
        "secrets": {
            "AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": shop.granted["access_token"],
            "AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN": shop.granted["refresh_token"],
            "AUDIENCE_SYNC_SHOPIFY_CLIENT_SECRET": CLIENT_SECRET,
        },
    }
    return make_settings(**{**values, **extra})


Opener = Callable[[], Store]


@pytest.fixture
def opened(database_url: str) -> Iterator[Opener]:
    """Open stores on the test's database (each one a process's own), disposed at the end."""
    stores: list[Store] = []

    def open_one() -> Store:
        stores.append(open_store(database_url))
        return stores[-1]

    yield open_one
    for store in stores:
        store.dispose()


def run(store: Store, settings: Settings, wall: Wall) -> PullResult:
    runtime = make_runtime(settings, now=wall.read, sleep=lambda _s: None)
    return pull(store, load_config(settings.config), settings, runtime, now=wall.now)


def raw_row(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        table = schema.source_credentials
        row = conn.execute(select(table).where(table.c.source == "shopify")).mappings().one()
    return dict(row)


def no_token_in(text: str) -> bool:
    return ACCESS_PREFIX not in text and REFRESH_PREFIX not in text


def test_a_pull_across_expiry_refreshes_before_it_and_stores_both_new_values_encrypted(
    shop: Shop, database_url: str, opened: Opener
) -> None:
    shop.wall.step = REFRESH_MARGIN - timedelta(minutes=1)  # 4 minutes per request: ~14 per token
    store = opened()
    result = run(store, env(shop, database_url=database_url), shop.wall)

    assert result.status == "ok", result.error
    assert result.customers == 40 and result.orders > 0
    assert shop.oauth.exchanges >= 2 and result.source_stats["token_refreshes"] == shop.oauth.exchanges
    assert 401 not in shop.statuses()  # refreshed before expiry, never after
    assert shop.oauth.refused == []
    row = raw_row(store)
    assert shop.oauth.access is not None and shop.oauth.refresh is not None
    live_access, live_refresh = shop.oauth.access[0], shop.oauth.refresh[0]
    for column in ("access_token", "refresh_token"):
        assert no_token_in(row[column]) and live_access not in row[column] and live_refresh not in row[column]
    stored = SqlCredentials(store, make_settings(secret_key=KEY).secret_key).load("shopify")
    assert stored is not None
    assert (stored.access_token, stored.refresh_token) == (live_access, live_refresh)
    assert stored.expires_at == shop.oauth.access[1] and stored.refresh_expires_at == shop.oauth.refresh[1]
    assert row["problem"] is None
    runs = store.recent_runs(limit=5)
    assert all(no_token_in(f"{r.error} {r.counts}") for r in runs)


def test_a_second_store_instance_uses_the_stored_rotated_pair_not_the_environments(
    shop: Shop, database_url: str, opened: Opener
) -> None:
    settings = env(shop, database_url=database_url)
    first = opened()
    shop.wall.now += timedelta(hours=1)  # the environment's access token has expired: rotate at once
    assert run(first, settings, shop.wall).status == "ok"
    assert shop.oauth.exchanges == 1

    second = opened()  # another process, the same environment (its refresh token is spent)
    result = run(second, settings, shop.wall)
    assert result.status == "ok", result.error
    assert shop.oauth.refused == [] and shop.oauth.exchanges == 1  # the stored access token was still good
    shop.wall.now += timedelta(hours=1)
    assert run(second, settings, shop.wall).status == "ok"
    assert shop.oauth.refused == [] and shop.oauth.exchanges == 2  # the stored refresh token, not the env's


@pytest.mark.parametrize("shop", [4], indirect=True)
def test_a_401_mid_pull_refreshes_once_and_the_pull_continues(shop: Shop, opened: Opener) -> None:
    store = opened()
    result = run(store, env(shop, database_url=store.engine.url.render_as_string(False)), shop.wall)

    assert result.status == "ok", result.error
    assert result.customers == 40
    # one refresh at the start (the environment's pair has no known expiry), one after the 401
    assert shop.statuses().count(401) == 1 and shop.oauth.exchanges == 2
    stored = SqlCredentials(store, make_settings(secret_key=KEY).secret_key).load("shopify")
    assert shop.oauth.access is not None and stored is not None and stored.access_token == shop.oauth.access[0]


def test_a_revoked_refresh_token_needs_attention_with_what_to_do(shop: Shop, database_url: str, opened: Opener) -> None:
    store = opened()
    settings = env(shop, database_url=database_url)
    assert run(store, settings, shop.wall).status == "ok"
    shop.oauth.revoke()  # the app was uninstalled

    result = run(store, settings, shop.wall)
    assert result.status == "needs_attention"
    assert result.error is not None and "re-authorise the app" in result.error
    assert "AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN" in result.error and no_token_in(result.error)
    assert len(shop.oauth.refused) == 1
    problems = credential_problems(store)
    assert "re-authorise the app" in problems["shopify"] and no_token_in(problems["shopify"])
    shown = render_status(status_report(store))
    assert "shopify tokens: " in shown and "AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN" in shown and no_token_in(shown)

    again = run(store, settings, shop.wall)  # nothing is sent again until a person acts
    assert again.status == "needs_attention" and len(shop.oauth.refused) == 1

    granted = shop.oauth.grant()  # re-authorised: the new refresh token goes into the environment
    renewed = env(
        shop,
        database_url=database_url,
        secrets={
            "AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN": granted["refresh_token"],
            "AUDIENCE_SYNC_SHOPIFY_CLIENT_SECRET": CLIENT_SECRET,
        },
    )
    back = run(store, renewed, shop.wall)
    assert back.status == "ok", back.error
    assert credential_problems(store) == {} and shop.oauth.exchanges == 2  # the first pull's, and this one


def test_a_custom_app_token_without_refresh_settings_works_as_before(
    tmp_path: Path, database_url: str, opened: Opener
) -> None:
    with ShopifyEmulator(SyntheticStore(seed=6, customers=20, now=NOW)) as emulator:
        path = write_config(tmp_path / "custom.toml", "", shop_url=emulator.url, source_options="bulk_backfill = false")
        settings = make_settings(
            database_url=database_url, config=path, secrets={"AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN": DEFAULT_TOKEN}
        )
        store = opened()
        result = run(store, settings, Wall())
        assert result.status == "ok", result.error
        assert result.customers == 20 and "token_refreshes" not in result.source_stats
        with store.engine.connect() as conn:
            assert conn.execute(select(schema.source_credentials)).all() == []


def test_a_refresh_token_without_a_secret_key_is_a_clear_config_error(
    shop: Shop, database_url: str, opened: Opener
) -> None:
    store = opened()
    result = run(store, env(shop, database_url=database_url, secret_key=None), shop.wall)
    assert result.status == "needs_attention"
    assert result.error is not None and "AUDIENCE_SYNC_SECRET_KEY is not set" in result.error
    assert "Fernet.generate_key()" in result.error and no_token_in(result.error)
    assert shop.oauth.exchanges == 0 and shop.statuses() == []


def test_two_workers_near_expiry_spend_the_refresh_token_once(shop: Shop, database_url: str, opened: Opener) -> None:
    seed = TokenPair(shop.granted["access_token"], shop.granted["refresh_token"], NOW + timedelta(hours=1))
    stores = [opened() for _ in range(2)]
    providers = [
        ShopifyTokens(
            shop.emulator.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            seed=seed,
            store=SqlCredentials(s, make_settings(secret_key=KEY).secret_key),
            now=shop.wall.read,
        )
        for s in stores
    ]
    assert providers[0].current() == providers[1].current() == shop.granted["access_token"]  # seeded once
    shop.wall.now = NOW + timedelta(minutes=57)  # both now within the margin of expiry
    barrier = threading.Barrier(2)
    tokens: list[str] = []

    def worker(provider: ShopifyTokens) -> None:
        barrier.wait()
        tokens.append(provider.current())

    threads = [threading.Thread(target=worker, args=(p,)) for p in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for p in providers:
        p.close()
    assert shop.oauth.access is not None
    assert tokens == [shop.oauth.access[0]] * 2
    assert shop.oauth.exchanges == 1 and shop.oauth.refused == []
