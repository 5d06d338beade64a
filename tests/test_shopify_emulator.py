"""The synthetic store and the Shopify emulator behave as the Admin GraphQL API documents."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.kernel.emulator import Faults
from connectors.shopify.emulator import DEFAULT_TOKEN, INVALID_TOKEN_BODY, ShopifyEmulator
from connectors.shopify.synthetic import SyntheticStore, iso

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
PATH = "/admin/api/2026-04/graphql.json"
ORDERS = """
query O($first: Int!, $after: String, $query: String) {
  orders(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes { id updatedAt email currentTotalPriceSet { shopMoney { amount currencyCode } } }
  }
}
"""
CUSTOMER_IDS = """
query C($first: Int!, $after: String, $query: String) {
  customers(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id updatedAt } }
  }
}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def store() -> SyntheticStore:
    return SyntheticStore(seed=11, customers=300, now=NOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def emulator(store: SyntheticStore) -> Iterator[ShopifyEmulator]:
    """One server for the tests that do not touch the bucket (a huge one, so they never throttle)."""
    emu = ShopifyEmulator(store, bucket_size=1e9, restore_rate=1e9)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module", autouse=True)
def http() -> Iterator[httpx.Client]:
    """One client for the module: building an SSL context per call costs ~0.2 s."""
    global _HTTP
    with httpx.Client(timeout=10) as client:
        _HTTP = client
        yield client


_HTTP: httpx.Client


def post(emu: ShopifyEmulator, document: str, token: str = DEFAULT_TOKEN, **variables: Any) -> httpx.Response:
    body = {"query": document, "variables": variables}
    return _HTTP.post(emu.url + PATH, json=body, headers={"X-Shopify-Access-Token": token})


def page_through(emu: ShopifyEmulator, document: str, stream: str, **variables: Any) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        body = post(emu, document, after=after, **variables).json()
        assert "errors" not in body, body
        connection = body["data"][stream]
        nodes += connection["nodes"] if "nodes" in connection else [e["node"] for e in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            return nodes
        after = connection["pageInfo"]["endCursor"]


# -- the synthetic store -------------------------------------------------------------------------


def test_store_is_deterministic_and_fast() -> None:
    big = SyntheticStore(seed=5, customers=5000, now=NOW)
    assert len(big.customers) == 5000 and len(big.orders) > 7000
    again = SyntheticStore(seed=5, customers=200, now=NOW)
    twin = SyntheticStore(seed=5, customers=200, now=NOW)
    assert [o["currentTotalPriceSet"] for o in again.orders] == [o["currentTotalPriceSet"] for o in twin.orders]
    assert [c["defaultEmailAddress"] for c in again.customers] == [c["defaultEmailAddress"] for c in twin.customers]


def test_store_has_a_realistic_mix() -> None:
    big = SyntheticStore(seed=3, customers=3000, now=NOW)
    states = Counter(c["defaultEmailAddress"]["marketingState"] for c in big.customers if c["defaultEmailAddress"])
    total = sum(states.values())
    assert 0.50 < states["SUBSCRIBED"] / total < 0.60
    assert 0.20 < states["NOT_SUBSCRIBED"] / total < 0.30
    assert 0.07 < states["UNSUBSCRIBED"] / total < 0.13
    assert states["PENDING"] and states["INVALID"]
    assert any(c["defaultEmailAddress"] is None for c in big.customers)  # phone-only customers
    assert any(c["defaultPhoneNumber"] for c in big.customers)
    orders = big.orders
    guests = big.guest_orders()
    assert 0.05 < len(guests) / len(orders) < 0.15 and all(o["email"] for o in guests)
    assert any(o["email"] in big.customer_emails() for o in guests)  # a guest who also has an account
    assert 0.02 < len(big.cancelled_orders()) / len(orders) < 0.045
    refunded = big.refunded_orders()
    assert any(o["currentTotalPriceSet"]["shopMoney"]["amount"] == "0.00" for o in refunded)
    assert any(Decimal(o["currentTotalPriceSet"]["shopMoney"]["amount"]) > 0 for o in refunded)
    assert 2 <= len(big.test_orders()) < len(orders) * 0.01
    assert 0.25 < sum(1 for o in orders if o["discountCodes"]) / len(orders) < 0.35
    per_customer = Counter(o["customer"]["id"] for o in orders if o["customer"])
    assert Counter(per_customer.values())[1] > len(per_customer) / 2  # mostly one-time buyers
    totals = [Decimal(o["totalPriceSet"]["shopMoney"]["amount"]) for o in orders]
    assert max(totals) > 10 * statistics.median(totals)  # whales
    assert len(big.products) == 50 and all(p["sku"] for p in big.products)
    utm = Counter(
        (v["utmParameters"]["source"], v["utmParameters"]["medium"])
        for o in orders
        if (j := o["customerJourneySummary"]) and (v := j["firstVisit"])["utmParameters"]
    )
    assert {("google", "cpc"), ("facebook", "paid"), ("newsletter", "email")} <= set(utm)
    assert all(o["updatedAt"] <= iso(NOW) and o["createdAt"] <= o["updatedAt"] for o in orders)
    assert big.malformed_ids == {}


def test_malformed_flag_adds_bad_records() -> None:
    bad = SyntheticStore(seed=3, customers=50, now=NOW, malformed=True)
    assert set(bad.malformed_ids) == {
        "invalid_email",
        "negative_total",
        "unknown_currency",
        "non_numeric_amount",
    }
    assert bad.node(bad.malformed_ids["invalid_email"])["email"] == "not-an-email"
    assert bad.node(bad.malformed_ids["unknown_currency"])["currentTotalPriceSet"]["shopMoney"]["currencyCode"] == "XXX"


def test_advance_moves_the_clock_and_touches_records() -> None:
    live = SyntheticStore(seed=4, customers=100, now=NOW)
    before = len(live.orders)
    changes = live.advance(days=7, new_orders=30)
    assert live.now == NOW + timedelta(days=7)
    assert len(changes.new_orders) == 30 and len(live.orders) == before + 30
    after = NOW + timedelta(seconds=1)
    changed_orders = {o["id"] for o in live.updated_since("orders", after)}
    assert set(changes.new_orders) | set(changes.updated_orders) == changed_orders
    changed_customers = {c["id"] for c in live.updated_since("customers", after)}
    assert set(changes.updated_customers) | set(changes.new_customers) == changed_customers
    for gid in changes.new_orders:
        order = live.node(gid)
        assert NOW <= order["_created"] <= live.now
        if order["customer"]:
            assert order["customer"]["_updated"] >= order["_created"]


# -- the endpoint --------------------------------------------------------------------------------


def test_wrong_token_gets_shopifys_401(emulator: ShopifyEmulator) -> None:
    response = post(emulator, "{ shop { name } }", token="shpat_wrong")
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN_BODY


def test_invalid_query_is_refused_like_shopify(emulator: ShopifyEmulator) -> None:
    body = post(emulator, "{ orders(first: 5) { nodes { id landingSite } } }").json()
    assert "data" not in body
    assert "landingSite" in body["errors"][0]["message"]
    body = post(emulator, "query Q($first: Int!) { customers(first: $first) { nodes { id } } }", first="x").json()
    assert body["errors"]  # variable of the wrong type


def test_first_is_capped_at_250(emulator: ShopifyEmulator) -> None:
    body = post(emulator, "{ customers(first: 251) { nodes { id } } }").json()
    assert "250" in body["errors"][0]["message"]


def test_single_query_cost_limit(emulator: ShopifyEmulator) -> None:
    query = "{ orders(first: 100) { nodes { id lineItems(first: 50) { nodes { sku product { id } } } } } }"
    error = post(emulator, query).json()["errors"][0]
    assert error["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert error["extensions"]["cost"] == 2 + 100 * (1 + 2 + 50 * 2)


def test_only_selected_fields_are_rendered(emulator: ShopifyEmulator, store: SyntheticStore) -> None:
    body = post(emulator, "{ customers(first: 2) { nodes { id alias: firstName } } }").json()
    nodes = body["data"]["customers"]["nodes"]
    assert set(nodes[0]) == {"id", "alias"}
    assert nodes[0]["alias"] == store.node(nodes[0]["id"])["firstName"]


def test_filters_sort_and_cursor_paging(emulator: ShopifyEmulator, store: SyntheticStore) -> None:
    since = NOW - timedelta(days=90)
    until = NOW - timedelta(days=30)
    got = page_through(emulator, ORDERS, "orders", first=37, query=f"updated_at:>='{iso(since)}'")
    expected = {o["id"] for o in store.updated_since("orders", since)}
    assert [o["id"] for o in got if o["id"] in expected] == [o["id"] for o in got]
    assert {o["id"] for o in got} == expected and len(got) == len(expected)
    assert [o["updatedAt"] for o in got] == sorted(o["updatedAt"] for o in got)

    window = f"updated_at:>'{iso(since)}' AND updated_at:<='{iso(until)}'"
    ranged = page_through(emulator, CUSTOMER_IDS, "customers", first=50, query=window)
    assert {c["id"] for c in ranged} == {c["id"] for c in store.customers if since < c["_updated"] <= until}

    bad = post(emulator, ORDERS, first=5, query="financial_status:paid").json()
    assert "unsupported search term" in bad["errors"][0]["message"]


def test_every_answer_carries_cost_and_the_bucket_throttles(store: SyntheticStore, clock: FakeClock) -> None:
    emu = ShopifyEmulator(store, clock=clock, bucket_size=1000, restore_rate=50)
    emu.start()
    try:
        query = "{ orders(first: 100) { nodes { id customer { id } } } }"  # requested 2 + 100 * 2
        first = post(emu, query).json()
        cost = first["extensions"]["cost"]
        assert cost["requestedQueryCost"] == 202 and cost["actualQueryCost"] == 2 + 100 * 2 - sum(
            1 for o in first["data"]["orders"]["nodes"] if o["customer"] is None
        )
        assert cost["throttleStatus"]["maximumAvailable"] == 1000 and cost["throttleStatus"]["restoreRate"] == 50
        answers = [post(emu, query).json() for _ in range(5)]
        throttled = [a for a in answers if "errors" in a]
        assert throttled, "five 200-point queries on a nearly empty 1000-point bucket must throttle"
        error = throttled[0]["errors"][0]
        assert error["message"] == "Throttled" and error["extensions"]["code"] == "THROTTLED"
        status = throttled[0]["extensions"]["cost"]["throttleStatus"]
        assert status["currentlyAvailable"] < 202 and "data" not in throttled[0]
        clock.now += (202 - status["currentlyAvailable"]) / 50  # refill exactly enough
        assert "data" in post(emu, query).json()
    finally:
        emu.stop()


def test_throttle_storm_fault_answers_the_throttled_shape(store: SyntheticStore, clock: FakeClock) -> None:
    emu = ShopifyEmulator(store, clock=clock, faults=Faults(throttle_storm=1))
    emu.start()
    try:
        body = post(emu, "{ customers(first: 10) { nodes { id } } }").json()
        assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
        assert body["extensions"]["cost"]["requestedQueryCost"] == 12
        assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 0
        clock.now += 0.12
        assert "data" in post(emu, "{ customers(first: 10) { nodes { id } } }").json()
    finally:
        emu.stop()


def test_deep_paging_is_refused(store: SyntheticStore, clock: FakeClock) -> None:
    emu = ShopifyEmulator(store, clock=clock, max_page_depth=100)
    emu.start()
    try:
        after = None
        for _ in range(2):
            body = post(emu, CUSTOMER_IDS, first=50, after=after).json()
            after = body["data"]["customers"]["pageInfo"]["endCursor"]
        refused = post(emu, CUSTOMER_IDS, first=50, after=after).json()
        assert "data" not in refused and "25,000" not in refused["errors"][0]["message"]
        assert "Pagination" in refused["errors"][0]["message"]
        last = body["data"]["customers"]["edges"][-1]["node"]["updatedAt"]
        narrowed = post(emu, CUSTOMER_IDS, first=50, query=f"updated_at:>='{last}'").json()
        assert narrowed["data"]["customers"]["edges"]
    finally:
        emu.stop()
