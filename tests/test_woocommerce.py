"""The WooCommerce source against its emulator: statuses, money, guests, consent, transport, old stores,
paging, errors, and a whole pull through the worker into a real store."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.kernel.emulator import Faults, Request, Scripted
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.records import Consent, CustomerRecord, OrderRecord, Page
from connectors.kernel.runtime import Runtime
from connectors.kernel.vendor import source_class, vendor
from connectors.shopify.synthetic import Node, SyntheticStore
from connectors.woocommerce.client import ERRORS, WordPressPaginator, parse_credentials
from connectors.woocommerce.emulator import DEFAULT_CREDENTIALS, DEFAULT_KEY, DEFAULT_SECRET, WooCommerceEmulator
from connectors.woocommerce.records import customer_ref, order_ref
from connectors.woocommerce.source import WooCommerceConfig, WooCommerceSource
from connectors.woocommerce.synthetic import CONSENT_META_KEY, customer_id, order_id
from tests.conftest import make_settings
from worker.config import load_config
from worker.cycle import pull
from worker.factory import make_runtime
from worker.sandbox import Sandbox, needs_sandbox
from worker.store import Store, open_store

NOW = datetime(2026, 5, 1, tzinfo=UTC)


@dataclass
class Shop:
    store: SyntheticStore
    emulator: WooCommerceEmulator
    waits: list[float] = field(default_factory=list)
    built: list[WooCommerceSource] = field(default_factory=list)

    def source(self, secret: str = DEFAULT_CREDENTIALS, **config: Any) -> WooCommerceSource:
        settings = WooCommerceConfig(base_url=self.emulator.url, **config)
        self.built.append(WooCommerceSource(settings, Runtime(sleep=self.waits.append), secret))
        return self.built[-1]

    def close(self) -> None:
        for source in self.built:
            source.close()

    def pull(self, stream: str, since: datetime | None = None, **config: Any) -> list[Page]:
        source = self.source(**config)
        try:
            return list(source.pull(stream, since))
        finally:
            source.close()

    def registered_order(self, refunded: bool = False) -> Node:
        """A plain counted order of a registered customer (refunded in part, when asked)."""
        return next(
            o
            for o in self.store.orders
            if o["customer"] is not None
            and o["cancelledAt"] is None
            and not o["test"]
            and o["_original_cents"] is not None
            and (0 < o["_current_cents"] < o["_original_cents"]) == refunded
        )


@pytest.fixture
def shop() -> Iterator[Shop]:
    store = SyntheticStore(seed=7, customers=60, now=NOW, malformed=True)
    emulator = WooCommerceEmulator(store)
    with emulator:
        built = Shop(store, emulator)
        yield built
        built.close()


def orders_of(pages: list[Page]) -> dict[str, OrderRecord]:
    return {o.order_id: o for p in pages for o in p.orders}


def customers_of(pages: list[Page]) -> dict[str, CustomerRecord]:
    return {c.customer_id: c for p in pages for c in p.customers}


def problems_of(pages: list[Page]) -> list[tuple[str, str]]:
    return [(p.ref, p.reason) for page in pages for p in page.problems]


# -- statuses and money ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "counted"),
    [
        ("processing", True),
        ("completed", True),
        ("on-hold", True),
        ("shipped", True),  # a plugin's status counts unless configured otherwise
        ("pending", False),
        ("failed", False),
        ("cancelled", False),
        ("refunded", False),
        ("trash", False),
        ("checkout-draft", False),
    ],
)
def test_statuses_map_as_documented(shop: Shop, status: str, counted: bool) -> None:
    node = shop.registered_order()
    shop.emulator.patch("orders", order_id(node), status=status)
    order = orders_of(shop.pull("orders"))[order_ref(order_id(node))]
    assert order.cancelled is not counted
    charged = Decimal(node["currentTotalPriceSet"]["shopMoney"]["amount"])
    assert order.total == (Decimal(0) if status == "refunded" else charged)


def test_statuses_a_plugin_adds_can_be_left_out(shop: Shop) -> None:
    node = shop.registered_order()
    shop.emulator.patch("orders", order_id(node), status="awaiting-shipment")
    pulled = orders_of(shop.pull("orders", uncounted_statuses=("awaiting-shipment",)))
    assert pulled[order_ref(order_id(node))].cancelled


def test_refunds_lower_the_total_and_a_full_refund_stops_the_order_counting(shop: Shop) -> None:
    partly = shop.registered_order(refunded=True)
    whole = shop.registered_order()
    charged = Decimal(shop.emulator.render("orders", whole)["total"])
    shop.emulator.patch("orders", order_id(whole), refunds=[{"id": 1, "total": f"-{charged}"}])
    pulled = orders_of(shop.pull("orders"))

    rendered = shop.emulator.render("orders", partly)
    assert Decimal(rendered["total"]) > Decimal(partly["currentTotalPriceSet"]["shopMoney"]["amount"])  # charged
    record = pulled[order_ref(order_id(partly))]
    assert record.total == Decimal(partly["currentTotalPriceSet"]["shopMoney"]["amount"])  # after the refund
    assert not record.cancelled
    gone = pulled[order_ref(order_id(whole))]
    assert (gone.total, gone.cancelled) == (Decimal(0), True)  # status still says completed


def test_line_items_coupons_and_attribution_carry_over(shop: Shop) -> None:
    node = next(
        o
        for o in shop.store.orders
        if o["discountCodes"] and ((o["customerJourneySummary"] or {}).get("firstVisit") or {}).get("utmParameters")
    )
    typein = next(
        o
        for o in shop.store.orders
        if ((o["customerJourneySummary"] or {}).get("firstVisit") or {}).get("source") == "direct"
    )
    pulled = orders_of(shop.pull("orders"))
    order = pulled[order_ref(order_id(node))]
    utm = node["customerJourneySummary"]["firstVisit"]["utmParameters"]
    assert order.channel == f"{utm['source']} / {utm['medium']}"
    assert order.landing_page == node["customerJourneySummary"]["firstVisit"]["landingPage"]
    assert order.discount_codes == tuple(code.lower() for code in node["discountCodes"])  # WooCommerce lowercases
    assert [(li.sku, li.quantity) for li in order.lines] == [
        (li["sku"], li["quantity"]) for li in node["lineItems"]["nodes"]
    ]
    assert all(li.product_id and li.product_id.startswith("woocommerce:product:") for li in order.lines)
    assert pulled[order_ref(order_id(typein))].channel == "direct"  # "(direct)", as WooCommerce shows it


# -- people -----------------------------------------------------------------------------------------------
def test_guest_orders_are_keyed_by_their_billing_email(shop: Shop) -> None:
    guest = shop.store.guest_orders()[0]
    registered = shop.registered_order()
    pulled = orders_of(shop.pull("orders"))
    assert pulled[order_ref(order_id(guest))].customer_id is None
    assert pulled[order_ref(order_id(guest))].email == guest["email"]
    mine = pulled[order_ref(order_id(registered))]
    assert mine.customer_id == customer_ref(customer_id(registered["customer"]))


def test_consent_comes_from_the_configured_meta_key(shop: Shop) -> None:
    pulled = customers_of(shop.pull("customers", consent_meta_key=CONSENT_META_KEY))
    for node in shop.store.customers:
        record = pulled[customer_ref(customer_id(node))]
        state = node["defaultEmailAddress"]["marketingState"] if node["defaultEmailAddress"] else None
        expected = {None: Consent.UNKNOWN, "SUBSCRIBED": Consent.SUBSCRIBED}.get(state, Consent.NOT_SUBSCRIBED)
        assert record.email_consent is expected
    assert {c.email_consent for c in pulled.values()} >= {Consent.SUBSCRIBED, Consent.NOT_SUBSCRIBED}

    guest = shop.store.guest_orders()[0]
    shop.emulator.patch("orders", order_id(guest), meta_data=[{"id": 9, "key": CONSENT_META_KEY, "value": "yes"}])
    orders = orders_of(shop.pull("orders", consent_meta_key=CONSENT_META_KEY))
    assert orders[order_ref(order_id(guest))].accepts_marketing is True
    assert {o.accepts_marketing for k, o in orders.items() if k != order_ref(order_id(guest))} == {None}


def test_without_a_consent_key_consent_is_unknown(shop: Shop) -> None:
    pulled = customers_of(shop.pull("customers"))
    assert len(pulled) == len(shop.store.customers)
    assert {c.email_consent for c in pulled.values()} == {Consent.UNKNOWN}
    guest = shop.store.guest_orders()[0]
    shop.emulator.patch("orders", order_id(guest), meta_data=[{"id": 9, "key": CONSENT_META_KEY, "value": "1"}])
    assert orders_of(shop.pull("orders"))[order_ref(order_id(guest))].accepts_marketing is None


def test_customers_carry_their_identifiers_and_the_gmt_time(shop: Shop) -> None:
    pulled = customers_of(shop.pull("customers"))
    for node in shop.store.customers:
        record = pulled[customer_ref(customer_id(node))]
        email = node["defaultEmailAddress"]["emailAddress"] if node["defaultEmailAddress"] else None
        assert (record.email, record.updated_at) == (email, node["_updated"])  # not the site's local time
        assert record.country == (node["defaultAddress"]["countryCodeV2"] if node["defaultAddress"] else None)


# -- transport and credentials ------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://shop.example.com", "http://192.168.1.20", "ftp://shop.example.com"])
def test_credentials_never_go_over_plain_http_to_another_host(url: str) -> None:
    with pytest.raises(ValidationError, match="https"):
        WooCommerceConfig(base_url=url)
    # a config built around validation still refuses, before any request leaves
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:  # a transport that would carry them, were it asked
        sent.append(request)
        return httpx.Response(200, json=[])

    client = httpx.Client(transport=httpx.MockTransport(answer))
    config = WooCommerceConfig.model_construct(type="woocommerce", base_url=url, page_size=100)
    source = WooCommerceSource(config, Runtime(sleep=lambda s: None), DEFAULT_CREDENTIALS, client=client)
    with pytest.raises(ConfigError, match="https") as info:
        list(source.pull("orders", None))
    assert sent == []
    assert DEFAULT_SECRET not in str(info.value)


@pytest.mark.parametrize("url", ["https://shop.example.com", "http://127.0.0.1:8080", "http://localhost:8080"])
def test_https_and_loopback_hosts_are_accepted(url: str) -> None:
    assert WooCommerceConfig(base_url=url).base_url == url


def test_basic_auth_by_default_and_the_query_only_when_asked(shop: Shop) -> None:
    seen: list[Request] = []
    shop.emulator.faults = Faults(script=[Scripted("GET", "/customers$", "hook", times=2, hook=seen.append)])
    for query_auth in (False, True):
        assert len(customers_of(shop.pull("customers", query_string_auth=query_auth))) == len(shop.store.customers)
    basic, query = seen
    assert basic.path == "/wp-json/wc/v3/customers"
    assert (basic.header("Authorization") or "").startswith("Basic ") and "consumer_secret" not in basic.query
    assert not query.header("Authorization")
    assert (query.query["consumer_key"], query.query["consumer_secret"]) == ([DEFAULT_KEY], [DEFAULT_SECRET])


def test_credentials_must_be_a_key_and_a_secret() -> None:
    assert parse_credentials(" ck_a:cs_b ") == ("ck_a", "cs_b")
    for bad in ("", "ck_only_the_key_0123", ":cs_secret_0123", "ck_key:"):
        with pytest.raises(ConfigError) as info:
            parse_credentials(bad)
        assert "ck_…:cs_…" in info.value.message and (not bad or bad.strip(":") not in info.value.message)


def test_a_401_is_a_config_error_without_the_secret(shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_secret = f"{DEFAULT_KEY}:cs_wrong_secret_0123456789"
    with pytest.raises(ConfigError) as info:
        list(shop.source(secret=wrong_secret).pull("orders", None))
    assert info.value.code == "woocommerce_rest_authentication_error" and info.value.status == 401
    assert "consumer key and secret" in info.value.message
    wrong_key = "ck_wrong_key_0123456789:cs_wrong_secret_0123456789"
    with pytest.raises(ConfigError) as unknown:
        list(shop.source(secret=wrong_key).pull("customers", None))
    assert unknown.value.code == "woocommerce_rest_cannot_view" and "Authorization header" in unknown.value.message
    text = info.value.message + unknown.value.message + caplog.text
    for secret in ("cs_wrong_secret_0123456789", "ck_wrong_key_0123456789", DEFAULT_SECRET):
        assert secret not in text
    assert len(shop.emulator.log) == 2, "an auth failure must not be retried"


def test_a_refused_parameter_is_permanent_and_not_retried(shop: Shop) -> None:
    config = WooCommerceConfig.model_construct(type="woocommerce", base_url=shop.emulator.url, page_size=101)
    source = WooCommerceSource(config, Runtime(sleep=shop.waits.append), DEFAULT_CREDENTIALS)
    shop.built.append(source)
    with pytest.raises(PermanentError) as info:
        list(source.pull("customers", None))
    assert not isinstance(info.value, ConfigError) and info.value.code == "rest_invalid_param"
    assert len(shop.emulator.log) == 1 and shop.waits == []


def _answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "https://shop.example.com/wp-json/wc/v3/orders")
    if body is None:
        return httpx.Response(status, html="<html><h1>blocked</h1></html>", headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_the_hosts_firewall_is_waited_out_and_its_refusal_explained() -> None:
    with pytest.raises(RateLimitedError) as throttled:
        ERRORS.raise_for(_answer(429, headers={"Retry-After": "7"}))
    assert throttled.value.wait_seconds == 7.0
    with pytest.raises(RateLimitedError) as unavailable:
        ERRORS.raise_for(_answer(503, headers={"Retry-After": "4"}))
    assert unavailable.value.wait_seconds == 4.0
    with pytest.raises(RetryableError) as down:
        ERRORS.raise_for(_answer(503))
    assert not isinstance(down.value, RateLimitedError)
    with pytest.raises(ConfigError, match="firewall refused"):
        ERRORS.raise_for(_answer(403))
    with pytest.raises(ConfigError, match="permalinks"):
        ERRORS.raise_for(_answer(404, {"code": "rest_no_route", "message": "No route", "data": {"status": 404}}))


def test_a_throttled_pull_waits_as_the_firewall_says_and_misses_nothing(shop: Shop) -> None:
    shop.emulator.faults.throttle_storm = 3
    pulled = customers_of(shop.pull("customers"))
    assert len(pulled) == len(shop.store.customers)
    assert [r.status for r in shop.emulator.log[:4]] == [429, 503, 503, 200]
    assert shop.waits[:2] == [2.0, 3.0] and shop.waits[2] > 0  # the Retry-After values, then a backoff


# -- old stores -------------------------------------------------------------------------------------------
def _since(shop: Shop) -> datetime:
    updated: list[datetime] = sorted(o["_updated"] for o in shop.store.orders)
    return updated[len(updated) * 2 // 3]


def test_an_old_store_that_ignores_modified_after_is_read_again_with_a_warning() -> None:
    store = SyntheticStore(seed=7, customers=60, now=NOW, malformed=True)
    emulator = WooCommerceEmulator(store, knows_modified_after=False)
    with emulator:
        shop = Shop(store, emulator)
        since = _since(shop)
        pages = shop.pull("orders", since, page_size=10)
    expected = {order_ref(order_id(o)) for o in store.orders if o["_updated"] >= since}
    got = [o.order_id for p in pages for o in p.orders] + [r for r, _ in problems_of(pages) if r != "orders"]
    assert sorted(got) == sorted(expected)  # exactly the changed ones, once each
    warnings = [reason for ref, reason in problems_of(pages) if ref == "orders"]
    assert len(warnings) == 1 and "ignored modified_after" in warnings[0]  # the bin is empty: nothing to re-read
    marks = [p.max_updated_at for p in pages if p.max_updated_at is not None]
    assert marks == sorted(marks)
    assert any("modified_after" in q for _, q in emulator.queries)  # it was asked, and ignored


def test_a_store_that_cannot_sort_by_modification_is_read_by_id() -> None:
    store = SyntheticStore(seed=7, customers=60, now=NOW, malformed=True)
    emulator = WooCommerceEmulator(store, sorts_by_modified=False)
    with emulator:
        shop = Shop(store, emulator)
        since = _since(shop)
        pages = shop.pull("orders", since, page_size=10)
    expected = {order_ref(order_id(o)) for o in store.orders if o["_updated"] >= since}
    assert set(orders_of(pages)) | {r for r, _ in problems_of(pages) if r != "orders"} == expected
    assert any("cannot sort orders" in reason for _, reason in problems_of(pages))
    marks = [p.max_updated_at for p in pages if p.max_updated_at is not None]
    assert marks == sorted(marks)


def test_a_current_store_is_asked_only_for_what_changed(shop: Shop) -> None:
    since = _since(shop)
    pages = shop.pull("orders", since)
    unreadable = {ref for ref, _ in problems_of(pages)}
    assert "orders" not in unreadable  # no warning: the filter was honoured
    assert set(orders_of(pages)) | unreadable == {
        order_ref(order_id(o)) for o in shop.store.orders if o["_updated"] >= since
    }
    assert len(shop.emulator.queries) == 2  # one page of changed orders, one of the (empty) bin
    first = shop.emulator.queries[0][1]
    assert first["modified_after"] == (since - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert (first["dates_are_gmt"], first["orderby"], first["order"], first["per_page"]) == (
        "true",
        "modified",
        "asc",
        "100",
    )


# -- paging -------------------------------------------------------------------------------------------------
def test_paging_covers_every_record_exactly_once(shop: Shop) -> None:
    expected = {
        "orders": [order_ref(order_id(n)) for n in shop.store.orders],
        "customers": [customer_ref(customer_id(n)) for n in shop.store.customers],
    }
    for stream, ids in expected.items():
        pages = shop.pull(stream, page_size=7)
        got = [o.order_id for p in pages for o in p.orders] + [c.customer_id for p in pages for c in p.customers]
        assert sorted(got + [ref for ref, _ in problems_of(pages)]) == sorted(ids)
        marks = [p.max_updated_at for p in pages if p.max_updated_at is not None]
        assert marks == sorted(marks)
    requests = [q for path, q in shop.emulator.queries if path.endswith("/customers")]
    assert [q["page"] for q in requests] == [str(n) for n in range(1, len(shop.store.customers) // 7 + 2)]


def test_a_bulk_edit_sharing_one_second_is_paged_through(shop: Shop) -> None:
    moment = "2026-04-20T10:00:00"
    bulk = shop.store.orders[:25]
    for node in bulk:
        shop.emulator.patch("orders", order_id(node), date_modified_gmt=moment)
    pages = shop.pull("orders", datetime(2026, 4, 20, 10, tzinfo=UTC), page_size=10)
    got = [o.order_id for p in pages for o in p.orders]
    assert len(got) == len(set(got))
    assert {order_ref(order_id(n)) for n in bulk} <= set(got)


def test_an_order_changed_during_the_pull_makes_no_other_order_go_missing(shop: Shop) -> None:
    first = min(shop.store.orders, key=lambda o: (o["_updated"], o["_n"]))

    def edit_an_order_already_read(request: Request) -> None:
        shop.emulator.patch("orders", order_id(first), date_modified_gmt="2026-04-30T23:59:59")

    hook = Scripted("GET", "/orders$", "hook", times=1, after=0, hook=edit_an_order_already_read)
    shop.emulator.faults = Faults(script=[hook])
    pages = shop.pull("orders", page_size=7)
    got = {o.order_id for p in pages for o in p.orders} | {ref for ref, _ in problems_of(pages)}
    assert got == {order_ref(order_id(o)) for o in shop.store.orders}  # page numbers alone would skip one
    assert orders_of(pages)[order_ref(order_id(first))].updated_at == datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC)


def test_an_order_moved_to_the_bin_stops_counting(shop: Shop) -> None:
    node = shop.registered_order()
    since = max(o["_updated"] for o in shop.store.orders) + timedelta(minutes=1)
    shop.emulator.patch("orders", order_id(node), status="trash", date_modified_gmt=since.strftime("%Y-%m-%dT%H:%M:%S"))
    pulled = orders_of(shop.pull("orders", since))
    assert list(pulled) == [order_ref(order_id(node))]
    assert pulled[order_ref(order_id(node))].cancelled  # found by the status=trash walk
    assert {q["status"] for _, q in shop.emulator.queries} == {"any", "trash"}


def test_paging_follows_the_link_header_when_a_proxy_drops_x_wp_headers() -> None:
    paginator = WordPressPaginator(per_page=2)
    request = httpx.Request("GET", "https://shop.example.com/wp-json/wc/v3/orders")
    linked = httpx.Response(200, json=[], headers={"Link": '<https://x/?page=2>; rel="next"'}, request=request)
    assert paginator.next({"page": 1}, [1, 2], linked) == {"page": 2}
    bare = httpx.Response(200, json=[], request=request)
    assert paginator.next({"page": 1}, [1, 2], bare) == {"page": 2}  # a full page may have a successor
    assert paginator.next({"page": 2}, [1], bare) is None
    last = httpx.Response(200, json=[], headers={"X-WP-TotalPages": "2"}, request=request)
    assert paginator.next({"page": 2}, [1, 2], last) is None


def test_malformed_records_are_problems_and_the_rest_arrive(shop: Shop) -> None:
    bad_date, bad_line = shop.store.orders[3], shop.store.orders[4]
    shop.emulator.patch("orders", order_id(bad_date), date_created_gmt="yesterday")
    shop.emulator.patch("orders", order_id(bad_line), line_items=[{"product_id": 1, "quantity": "two"}])
    shop.emulator.patch("customers", 2, date_created_gmt=None, date_modified_gmt=None)
    orders, customers = shop.pull("orders"), shop.pull("customers")
    problems = dict(problems_of(orders) + problems_of(customers))
    assert problems[order_ref(order_id(bad_date))] == "bad date_created_gmt"
    assert problems[order_ref(order_id(bad_line))] == "line item without an integer quantity"
    assert problems[customer_ref(2)] == "missing date_modified_gmt and date_created_gmt"
    assert len(orders_of(orders)) == len(shop.store.orders) - 3  # and the non-numeric total of the shop
    assert len(customers_of(customers)) == len(shop.store.customers) - 1


# -- configuration and the worker ------------------------------------------------------------------------
def test_config_and_registration() -> None:
    declared = vendor("woocommerce")
    assert source_class("woocommerce") is WooCommerceSource
    assert declared.secrets == {"secret": "AUDIENCE_SYNC_WOOCOMMERCE_SECRET"}
    assert WooCommerceConfig(base_url="shop.example.com/wp-json/wc/v3/").base_url == "https://shop.example.com"
    assert WooCommerceConfig(base_url="sandbox").base_url == "sandbox"
    assert WooCommerceConfig(base_url="https://a.example", consent_meta_key="  ").consent_meta_key is None
    with pytest.raises(ValidationError):
        WooCommerceConfig(base_url="https://a.example", page_size=101)
    with pytest.raises(ValidationError):
        WooCommerceConfig(base_url="https://a.example", consumer_key="ck_x")  # type: ignore[call-arg]


@contextlib.contextmanager
def opened(url: str) -> Iterator[Store]:
    store = open_store(url)
    try:
        yield store
    finally:
        store.dispose()


def _write(path: Path, base_url: str) -> Path:
    path.write_text(
        f'[source]\ntype = "woocommerce"\nbase_url = "{base_url}"\nconsent_meta_key = "{CONSENT_META_KEY}"\n',
        encoding="utf-8",
    )
    return path


def test_a_whole_pull_through_the_worker_stores_the_expected_counts(database_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=11, customers=120, now=NOW, malformed=True)
    emulator = WooCommerceEmulator(shop)
    with emulator:
        config = load_config(_write(tmp_path / "woo.toml", emulator.url))
        settings = make_settings(
            database_url=database_url, secrets={"AUDIENCE_SYNC_WOOCOMMERCE_SECRET": DEFAULT_CREDENTIALS}
        )
        with opened(database_url) as store:
            first = pull(store, config, settings, make_runtime(settings))

            # the negative total and the unknown currency are refused by ingest, the "N/A" total by the source
            assert (first.status, first.rejected) == ("partial", 3), first.error
            assert store.counts() == {"orders": len(shop.orders) - 3, "customers": len(shop.customers)}
            problems = dict(store.problems(first.run_id or 0))
            assert problems[order_ref(order_id(shop.node(shop.malformed_ids["negative_total"])))] == "negative total"
            assert "total" in problems[order_ref(order_id(shop.node(shop.malformed_ids["non_numeric_amount"])))]
            subscribed = sum(
                1
                for c in shop.customers
                if c["defaultEmailAddress"] and c["defaultEmailAddress"]["marketingState"] == "SUBSCRIBED"
            )
            consents = store.customers_frame()["email_consent"].value_counts().to_dict()
            assert consents.get("SUBSCRIBED") == subscribed > 0
            assert store.get_watermark("woocommerce", "orders") == max(o["_updated"] for o in shop.orders)

            changes = shop.advance(10, new_orders=30)
            later = pull(store, config, settings, make_runtime(settings))
            assert later.orders < first.orders / 5  # incremental, not a re-read of history
            assert later.orders >= len(changes.new_orders) + len(changes.updated_orders)
            assert store.counts() == {"orders": len(shop.orders) - 3, "customers": len(shop.customers)}


def test_the_sandbox_serves_its_shop_as_a_woocommerce_store(sqlite_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=5, customers=40, now=NOW, malformed=True)
    settings = make_settings(database_url=sqlite_url)
    config = load_config(_write(tmp_path / "woo.toml", "sandbox"))
    assert needs_sandbox(config)  # what `run` asks before it starts one
    with Sandbox(NOW, store=shop) as sandbox, opened(sqlite_url) as store:
        config, resolved = sandbox.resolve(config, settings)
        result = pull(store, config, resolved, make_runtime(resolved))
        assert isinstance(sandbox.emulator("woocommerce"), WooCommerceEmulator)
        assert result.status == "partial" and store.counts()["orders"] == len(shop.orders) - 3


def test_an_old_store_pulled_through_the_worker_counts_the_full_read(sqlite_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=11, customers=60, now=NOW, malformed=True)
    emulator = WooCommerceEmulator(shop, knows_modified_after=False)
    with emulator:
        config = load_config(_write(tmp_path / "woo.toml", emulator.url))
        settings = make_settings(
            database_url=sqlite_url, secrets={"AUDIENCE_SYNC_WOOCOMMERCE_SECRET": DEFAULT_CREDENTIALS}
        )
        with opened(sqlite_url) as store:
            # the first pull finds out on its second page, asked from the newest time of the first
            first = pull(store, config, settings, make_runtime(settings))
            assert store.counts() == {"orders": len(shop.orders) - 3, "customers": len(shop.customers)}
            changes = shop.advance(10, new_orders=20)
            later = pull(store, config, settings, make_runtime(settings))
            for run in (first, later):  # the bin is empty: only the "any" walk was read again
                assert run.counts()["source_full_reads"] == 1
                warnings = [reason for ref, reason in store.problems(run.run_id or 0) if ref == "orders"]
                assert len(warnings) == 1 and warnings[0].startswith("warning: the store ignored modified_after")
            assert len(changes.new_orders) + len(changes.updated_orders) <= later.orders < first.orders / 5
            assert store.counts() == {"orders": len(shop.orders) - 3, "customers": len(shop.customers)}
            assert store.get_watermark("woocommerce", "orders") == max(o["_updated"] for o in shop.orders)


def _mapping_rows(table: str) -> dict[str, list[str]]:
    """A cycle's mapping table (``render_cycle``) as mapping → its columns."""
    lines = table.split("\nmapping ", 1)[1].splitlines()[1:]
    rows = {}
    for line in lines:
        if not line.strip() or line.startswith(" "):
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def test_the_demo_runs_on_a_woocommerce_sandbox_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCE_SYNC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    command = [sys.executable, "-m", "worker.cli", "demo", "--source", "woocommerce", "--customers", "80"]
    demo = subprocess.run(
        [*command, "--workdir", "demo"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    assert re.search(r"served as a woocommerce store by its contract emulator at http://127\.0\.0\.1:\d+", out)
    assert 'type = "woocommerce"' in (tmp_path / "demo" / "config.toml").read_text(encoding="utf-8")
    built = re.search(r"(\d+) customers, (\d+) orders \(including", out)
    assert built is not None
    pulls = re.findall(r"pulled (\d+) customers \([^)]*\) and (\d+) orders \([^)]*\)[^;]*; (\d+) records not", out)
    assert len(pulls) == 2, out
    (customers, orders, unusable), (_, later_orders, _) = [tuple(map(int, p)) for p in pulls]
    assert (customers, orders + unusable) == (int(built[1]), int(built[2]))  # the whole shop, from WooCommerce
    assert 0 < later_orders < orders / 2  # the second cycle read only what changed

    first, second = (out.split(f"== {heading}", 1)[1] for heading in ("cycle 1", "today"))
    synced = _mapping_rows(first.split("== today", 1)[0])
    assert synced and all(row[-1] in ("ok", "partial") for row in synced.values()), first
    # columns: mapping, segment, size, eligible, added, …; consent came from the meta key: email lists fill
    assert int(synced["newsletter-mailchimp"][4]) > 0 and int(synced["buyers-meta"][4]) > 0
    assert all(row[-1] in ("ok", "partial") for row in _mapping_rows(second).values())
