"""ShopifySource against the Shopify emulator over real HTTP; time is fake, so nothing really waits."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.kernel.emulator import Faults
from connectors.kernel.errors import ConfigError, PermanentError
from connectors.kernel.records import Consent, CustomerRecord, LineItem, OrderRecord, Page
from connectors.kernel.runtime import Runtime
from connectors.kernel.vendor import source_class
from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
from connectors.shopify.source import NODE_COST, ORDER_LINES_QUERY, QUERIES, ShopifyConfig, ShopifySource
from connectors.shopify.synthetic import Node, SyntheticStore
from tests.shopify_schema import query_problems

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class FakeTime:
    """The emulator's clock and the source's sleep: sleeping refills the bucket, instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Rig:
    def __init__(self, store: SyntheticStore, **emulator_options: Any) -> None:
        self.store = store
        self.time = FakeTime()
        self.emulator = ShopifyEmulator(store, clock=self.time.clock, **emulator_options)
        self.emulator.start()
        self.sources: list[ShopifySource] = []

    def source(self, token: str = DEFAULT_TOKEN, **config: Any) -> ShopifySource:
        settings = ShopifyConfig(type="shopify", shop_url=self.emulator.url, **config)
        source = ShopifySource(settings, Runtime(sleep=self.time.sleep), token)
        self.sources.append(source)
        return source

    def close(self) -> None:
        for source in self.sources:
            source.close()
        self.emulator.stop()


def pull_all(source: ShopifySource, stream: str, since: datetime | None = None) -> list[Page]:
    return list(source.pull(stream, since))


def orders_of(pages: list[Page]) -> list[OrderRecord]:
    return [o for p in pages for o in p.orders]


def customers_of(pages: list[Page]) -> list[CustomerRecord]:
    return [c for p in pages for c in p.customers]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    """A clean 500-customer store behind Shopify's default bucket (2000 points, 100/s)."""
    bench = Rig(SyntheticStore(seed=21, customers=500, now=NOW))
    yield bench
    bench.close()


def expected_order(node: Node) -> OrderRecord:
    """The record a node should become, written from the store's side."""
    visit = (node["customerJourneySummary"] or {}).get("firstVisit") or {}
    utm = visit.get("utmParameters") or {}
    channel = f"{utm['source']} / {utm['medium']}" if utm else visit.get("source")
    money = node["currentTotalPriceSet"]["shopMoney"]
    return OrderRecord(
        order_id=node["id"],
        source="shopify",
        customer_id=node["customer"]["id"] if node["customer"] else None,
        email=node["email"],
        created_at=datetime.fromisoformat(node["createdAt"]),
        updated_at=datetime.fromisoformat(node["updatedAt"]),
        total=Decimal(money["amount"]),
        currency=money["currencyCode"],
        cancelled=node["cancelledAt"] is not None,
        test=node["test"],
        phone=node["phone"],
        discount_codes=tuple(node["discountCodes"]),
        lines=tuple(LineItem(i["product"]["id"], i["sku"], i["quantity"]) for i in node["lineItems"]["nodes"]),
        channel=channel,
        landing_page=visit.get("landingPage"),
        referrer=visit.get("referrerUrl"),
    )


def expected_customer(node: Node) -> CustomerRecord:
    email = node["defaultEmailAddress"] or {}
    consent_at = email.get("marketingUpdatedAt")
    return CustomerRecord(
        customer_id=node["id"],
        source="shopify",
        email=email.get("emailAddress"),
        updated_at=datetime.fromisoformat(node["updatedAt"]),
        email_consent=Consent(email["marketingState"]) if email else Consent.UNKNOWN,
        consent_updated_at=datetime.fromisoformat(consent_at) if consent_at else None,
        phone=(node["defaultPhoneNumber"] or {}).get("phoneNumber"),
        first_name=node["firstName"],
        last_name=node["lastName"],
        country=(node["defaultAddress"] or {}).get("countryCodeV2"),
    )


# -- contract ------------------------------------------------------------------------------------


def test_every_query_sent_is_valid_2026_04_and_not_deprecated(rig: Rig) -> None:
    source = rig.source(page_size=50)
    for stream in ("customers", "orders"):
        next(iter(source.pull(stream, NOW - timedelta(days=3))))
    sent = [q for q in rig.emulator.queries if q in QUERIES.values()]
    assert len(sent) == 2
    for query in sent:
        assert query_problems(query) == []


def test_emulator_refuses_a_field_shopify_does_not_have(rig: Rig) -> None:
    source = rig.source()
    with pytest.raises(PermanentError) as refused:
        source.client.query("{ orders(first: 1) { nodes { id landingSite } } }", {})
    assert "landingSite" in refused.value.message
    assert not isinstance(refused.value, ConfigError)


@pytest.mark.parametrize("stream", ["customers", "orders"])
def test_page_size_keeps_each_query_under_the_cost_limit(rig: Rig, stream: str) -> None:
    source = rig.source(page_size=250)
    first = source.page_size(stream)
    body = source.client.query(QUERIES[stream], {"first": first, "query": "updated_at:>='2030-01-01T00:00:00Z'"})
    requested = body["extensions"]["cost"]["requestedQueryCost"]
    assert requested == 2 + first * NODE_COST[stream] <= 1000
    assert 2 + (first + 1) * NODE_COST[stream] > 1000 or first == 250


# -- pulls ---------------------------------------------------------------------------------------


def test_full_pull_equals_the_store(rig: Rig) -> None:
    store = rig.store
    source = rig.source()
    order_pages = pull_all(source, "orders")
    customer_pages = pull_all(source, "customers")
    orders = {o.order_id: o for o in orders_of(order_pages)}
    customers = {c.customer_id: c for c in customers_of(customer_pages)}
    assert len(orders) == len(orders_of(order_pages)) == len(store.orders)
    assert len(customers) == len(store.customers) == 500
    assert all(not p.problems for p in order_pages + customer_pages)
    for node in store.orders:
        assert orders[node["id"]] == expected_order(node)
    for node in store.customers:
        assert customers[node["id"]] == expected_customer(node)

    refunded = store.refunded_orders()
    assert refunded and {o.order_id for o in orders.values() if o.total < _original(store, o)} == {
        n["id"] for n in refunded
    }
    assert any(orders[n["id"]].total == 0 for n in refunded)
    guests = [o for o in orders.values() if o.customer_id is None]
    assert len(guests) == len(store.guest_orders()) and all(o.email for o in guests)
    assert sum(o.cancelled for o in orders.values()) == len(store.cancelled_orders()) > 0
    assert sum(o.test for o in orders.values()) == len(store.test_orders())
    assert any(o.channel == "google / cpc" for o in orders.values())
    assert any(o.channel == "direct" for o in orders.values())

    for pages in (order_pages, customer_pages):
        marks = [p.max_updated_at for p in pages if p.max_updated_at is not None]
        assert len(marks) == len(pages) and marks == sorted(marks)
        for page in pages:
            times = [o.updated_at for o in page.orders] + [c.updated_at for c in page.customers]
            assert page.max_updated_at == max(times)
    assert source.stats()["requests"] == len(order_pages) + len(customer_pages)


def test_orders_with_many_line_items_keep_every_line_and_pages_cost_what_they_ask() -> None:
    """The order query asks for 5 lines; an order with 40 or 300 gets the rest by follow-up queries."""
    shop = SyntheticStore(seed=5, customers=120, now=NOW)
    products = shop.products
    wide = {shop.orders[3]["id"]: 40, shop.orders[10]["id"]: 300}
    for gid, count in wide.items():
        shop.node(gid)["lineItems"]["nodes"] = [
            {"sku": products[k % 50]["sku"], "quantity": 1 + k % 3, "product": {"id": products[k % 50]["id"]}}
            for k in range(count)
        ]
    bench = Rig(shop)
    try:
        source = bench.source()
        orders = {o.order_id: o for o in orders_of(pull_all(source, "orders"))}
        for node in shop.orders:
            assert orders[node["id"]] == expected_order(node)
        assert {gid: len(orders[gid].lines) for gid in wide} == wide
        # 40 lines: one follow-up; 300 lines: two (250 + 45)
        assert source.stats()["line_followups"] == 3
        assert ORDER_LINES_QUERY in bench.emulator.queries and query_problems(ORDER_LINES_QUERY) == []
        # the order pages' requested cost is within 1.7x of what they actually cost (was 4.4x at 25 lines)
        pages = [e for e in bench.emulator.cost_log if e[0] == QUERIES["orders"]]
        requested = sum(e[1] for e in pages)
        actual = sum(e[2] for e in pages)
        assert requested / actual < 1.7, (requested, actual)
    finally:
        bench.close()


def _original(store: SyntheticStore, order: OrderRecord) -> Decimal:
    return Decimal(store.node(order.order_id)["totalPriceSet"]["shopMoney"]["amount"])


def test_incremental_pull_returns_only_changed_records() -> None:
    bench = Rig(SyntheticStore(seed=8, customers=150, now=NOW))
    try:
        source = bench.source()
        assert orders_of(pull_all(source, "orders"))
        since = bench.store.now
        changes = bench.store.advance(days=2, new_orders=40)
        orders = orders_of(pull_all(source, "orders", since))
        customers = customers_of(pull_all(source, "customers", since))
        assert {o.order_id for o in orders} == {n["id"] for n in bench.store.updated_since("orders", since)}
        assert set(changes.new_orders) | set(changes.updated_orders) <= {o.order_id for o in orders}
        assert len(orders) < len(bench.store.orders) / 5
        assert {c.customer_id for c in customers} == {n["id"] for n in bench.store.updated_since("customers", since)}
        assert all(o.updated_at >= since for o in orders)
    finally:
        bench.close()


def test_pagination_walks_every_page_once(rig: Rig) -> None:
    source = rig.source(page_size=7)
    pages = pull_all(source, "customers")
    assert len(pages) == math.ceil(500 / 7)
    ids = [c.customer_id for c in customers_of(pages)]
    assert len(ids) == len(set(ids)) == 500
    assert all(len(p.customers) == 7 for p in pages[:-1])


def test_windows_restart_before_shopifys_paging_limit() -> None:
    bench = Rig(SyntheticStore(seed=9, customers=120, now=NOW), max_page_depth=40)
    try:
        planned = bench.source(page_size=10, window_objects=30)
        ids = [c.customer_id for c in customers_of(pull_all(planned, "customers"))]
        assert len(ids) == len(set(ids)) == 120
        refusals_before = _refusals(bench)
        assert refusals_before == 0
        # a source that trusts the default window still recovers when Shopify refuses a deep cursor
        reactive = bench.source(page_size=10)
        ids = [c.customer_id for c in customers_of(pull_all(reactive, "customers"))]
        assert len(ids) == len(set(ids)) == 120
        assert _refusals(bench) > 0
        queries = [q for q in bench.emulator.queries if "customers(" in q]
        assert len(queries) == 1  # windows reuse the same document; only variables change
    finally:
        bench.close()


def _refusals(bench: Rig) -> int:
    # a refused deep cursor is answered 200 with no nodes in the log's item count
    return sum(1 for entry in bench.emulator.log if entry.status == 200 and entry.items is None)


# -- failures ------------------------------------------------------------------------------------


def test_throttling_is_waited_out_never_failed() -> None:
    store = SyntheticStore(seed=12, customers=200, now=NOW)
    bench = Rig(store, bucket_size=1000, restore_rate=50, faults=Faults(throttle_storm=3))
    try:
        source = bench.source()
        started = time.monotonic()
        orders = orders_of(pull_all(source, "orders"))
        assert len(orders) == len(store.orders)
        stats = source.stats()
        assert stats["throttled"] == bench.emulator.throttled_count >= 3
        # the storm drains the bucket: the hinted wait is the full requested cost at 50 points/s
        requested = 2 + source.page_size("orders") * NODE_COST["orders"]
        assert any(abs(s - requested / 50) < 0.01 for s in bench.time.sleeps)
        assert stats["paced_seconds"] > 0  # and it paced itself on the small bucket afterwards
        assert stats["waited_seconds"] >= sum(bench.time.sleeps) - 1e-6
        assert time.monotonic() - started < 10
    finally:
        bench.close()


def test_server_errors_and_resets_still_yield_complete_data() -> None:
    store = SyntheticStore(seed=13, customers=200, now=NOW)
    faults = Faults(error_rate=0.10, reset_rate=0.05, malformed_rate=0.03, seed=4)
    bench = Rig(store, faults=faults)
    try:
        source = bench.source()
        orders = orders_of(pull_all(source, "orders"))
        customers = customers_of(pull_all(source, "customers", None))
        assert sorted(o.order_id for o in orders) == sorted(n["id"] for n in store.orders)
        assert len({c.customer_id for c in customers}) == len(customers) == 200
        assert source.stats()["retries"] > 0
        assert {e.status for e in bench.emulator.log} & {0, 500, 502, 503}
    finally:
        bench.close()


def test_bad_token_is_a_config_error_that_never_shows_the_token(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    token = "shpat_" + "0123456789abcdef" * 2
    source = rig.source(token=token)
    before = len(rig.emulator.log)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as refused:
        pull_all(source, "orders")
    assert refused.value.status == 401
    assert token not in str(refused.value) and token not in refused.value.message
    assert token not in caplog.text
    assert len(rig.emulator.log) == before + 1  # not retried


def test_a_malformed_node_is_a_problem_and_the_rest_still_arrive() -> None:
    store = SyntheticStore(seed=14, customers=60, now=NOW, malformed=True)
    bench = Rig(store)
    try:
        pages = pull_all(bench.source(), "orders")
        problems = [p for page in pages for p in page.problems]
        bad = store.malformed_ids["non_numeric_amount"]
        assert [p.ref for p in problems] == [bad]
        assert "@" not in problems[0].reason and "amount" in problems[0].reason
        orders = {o.order_id: o for o in orders_of(pages)}
        assert len(orders) == len(store.orders) - 1
        assert orders[store.malformed_ids["invalid_email"]].email == "not-an-email"  # the worker validates
        assert orders[store.malformed_ids["negative_total"]].total == Decimal("-15.00")
        assert orders[store.malformed_ids["unknown_currency"]].currency == "XXX"
    finally:
        bench.close()


def test_parse_page_refers_to_nodes_without_an_id_by_position(rig: Rig) -> None:
    source = rig.source()
    page = source.parse_page(
        "customers",
        [{"updatedAt": "2026-01-01T00:00:00Z"}, {"id": "gid://shopify/Customer/1", "updatedAt": "yesterday"}],
        page_no=3,
    )
    assert [(p.ref, p.reason) for p in page.problems] == [
        ("customers page 3 item 1", "missing id"),
        ("gid://shopify/Customer/1", "bad updatedAt"),
    ]
    assert page.max_updated_at is None


# -- configuration -------------------------------------------------------------------------------


def test_config_and_registration() -> None:
    assert source_class("shopify") is ShopifySource
    assert ShopifyConfig(shop_url="my-shop.myshopify.com").shop_url == "https://my-shop.myshopify.com"
    assert ShopifyConfig(shop_url="https://my-shop.myshopify.com/").shop_url == "https://my-shop.myshopify.com"
    assert ShopifyConfig(shop_url="sandbox").api_version == "2026-04"
    for bad in ({"page_size": 251}, {"api_version": "2026-05"}, {"shop_url": "ftp://x"}, {"token": "x"}):
        with pytest.raises(ValidationError):
            ShopifyConfig.model_validate({"type": "shopify", "shop_url": "https://s.myshopify.com", **bad})
    tokenless = ShopifySource(ShopifyConfig(shop_url="https://s.myshopify.com"), Runtime(), None)
    with pytest.raises(ConfigError, match="access token"):
        next(iter(tokenless.pull("orders", None)))
    tokenless.close()


def test_unknown_shop_is_a_config_error(rig: Rig) -> None:
    source = rig.source()
    source.client.path = "/admin/api/2026-04/nope.json"  # what an unknown shop or version answers: 404
    with pytest.raises(ConfigError, match="404"):
        next(iter(source.pull("customers", None)))
