"""Shopify Admin GraphQL source: customers and orders changed since a watermark.

Each stream is one connection query sorted by ``UPDATED_AT`` with ``query: "updated_at:>='…'"``,
paged by cursor. Pages therefore arrive in ascending update time and the worker can advance its
watermark after every page.

A first pull of a large shop goes through the bulk export instead (``connectors/shopify/bulk.py``);
when that is off or fails, the same query pages through everything. Shopify refuses cursors
beyond 25,000 objects, so a long pull is cut into ``updated_at`` windows: after ``window_objects``
objects (or when Shopify refuses a deep cursor) the query restarts at ``updated_at:>=`` the newest
update time seen, skipping the records at exactly that time that were already yielded.

Cost: Shopify charges the *requested* cost up front (objects 1, connections 2 + first x node) and a
single query may cost at most 1000, so the page size is capped per stream from the query's node cost;
before each query the client sleeps until the bucket (as last reported in ``extensions.cost``) can
hold that query's requested cost. Orders ask for only their first few line items, so the requested
cost stays near what a page actually costs; the few orders with more lines get the rest from a
follow-up query per order (no line is lost for product segments).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from connectors.kernel.bulk import BulkExport
from connectors.kernel.credentials import RefreshingAuth, TokenPair
from connectors.kernel.error_table import ErrorTable, Found, Rule
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.http import JSON, HttpConnector
from connectors.kernel.records import OrderRecord, Page, Problem, Unreadable, obj
from connectors.kernel.retry import RetryPolicy
from connectors.kernel.runtime import Runtime
from connectors.kernel.source import Source, SourceConfig
from connectors.shopify.parsing import parse_customer, parse_lines, parse_order

if TYPE_CHECKING:
    from connectors.shopify.tokens import ShopifyTokens


log = logging.getLogger(__name__)

MAX_QUERY_COST = 1000
#: Shopify stops cursor paging after this many objects; a window restarts the query before it
PAGING_LIMIT = 25_000
#: line items asked for with each order: enough for nearly every order, so the requested cost stays
#: near the actual cost; an order with more is completed by :data:`ORDER_LINES_QUERY`
LINE_ITEMS_PER_ORDER = 5
#: line items per follow-up query for an order with more than :data:`LINE_ITEMS_PER_ORDER`
MORE_LINES_PAGE = 250

CUSTOMERS_QUERY = """
query Customers($first: Int!, $after: String, $query: String) {
  customers(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      updatedAt
      firstName
      lastName
      defaultEmailAddress { emailAddress marketingState marketingUpdatedAt }
      defaultPhoneNumber { phoneNumber }
      defaultAddress { countryCodeV2 }
    }
  }
}
"""

ORDERS_QUERY = """
query Orders($first: Int!, $after: String, $query: String) {
  orders(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      email
      phone
      createdAt
      updatedAt
      cancelledAt
      test
      currentTotalPriceSet { shopMoney { amount currencyCode } }
      discountCodes
      customer { id }
      lineItems(first: LINE_ITEMS) { pageInfo { hasNextPage endCursor } nodes { sku quantity product { id } } }
      customerJourneySummary {
        firstVisit { source landingPage referrerUrl utmParameters { source medium } }
      }
    }
  }
}
""".replace("LINE_ITEMS", str(LINE_ITEMS_PER_ORDER))

ORDER_LINES_QUERY = """
query OrderLines($id: ID!, $first: Int!, $after: String) {
  order(id: $id) {
    id
    lineItems(first: $first, after: $after) { pageInfo { hasNextPage endCursor } nodes { sku quantity product { id } } }
  }
}
"""

#: requested cost of one node of each query under Shopify's rules (objects 1, scalars 0,
#: connections 2 + first x node); a contract test checks these against the emulator's count
NODE_COST = {
    "customers": 1 + 3,  # Customer + defaultEmailAddress, defaultPhoneNumber, defaultAddress
    # Order + MoneyBag/MoneyV2 + customer + journey/firstVisit/utm + lineItems(2 + n x (item + product))
    "orders": 1 + 2 + 1 + 3 + 2 + LINE_ITEMS_PER_ORDER * 2,
}
QUERIES = {"customers": CUSTOMERS_QUERY, "orders": ORDERS_QUERY}


class ShopifyConfig(SourceConfig):
    """``[source]`` for Shopify; the access token comes from the secret store, never from here."""

    type: Literal["shopify"] = "shopify"
    #: ``https://{shop}.myshopify.com`` (or an emulator's URL)
    shop_url: str
    api_version: str = Field(default="2026-04", pattern=r"^\d{4}-(01|04|07|10)$")
    page_size: int = Field(default=100, ge=1, le=250)
    #: objects read per ``updated_at`` window before the query restarts (Shopify refuses > 25,000)
    window_objects: int = Field(default=PAGING_LIMIT - 250, ge=1, le=PAGING_LIMIT)
    #: a first pull (no watermark) exports each stream in bulk instead of paging through it
    bulk_backfill: bool = True
    #: the app's client id, to refresh expiring offline tokens (``connectors/shopify/tokens.py``)
    client_id: str | None = None
    #: from ``AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN`` / ``_CLIENT_SECRET``: set, tokens expire and rotate
    refresh_token: SecretStr | None = None
    client_secret: SecretStr | None = None

    @field_validator("shop_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value == "sandbox":  # the worker's sandbox swaps in its emulator's URL
            return value
        if "://" not in value and "." in value:
            value = f"https://{value}"
        if not re.match(r"^https?://[^/\s]+$", value):
            raise ValueError("shop_url must be a base URL such as https://my-shop.myshopify.com")
        return value


class DeepPagingRefused(PermanentError):
    """Shopify refused a cursor past its paging limit; the source restarts with a newer window."""


def _graphql_errors(response: httpx.Response, body: Any) -> Found:
    """GraphQL ``errors`` (sent with HTTP 200): the first code among them, every message."""
    if not isinstance(body, dict):
        return Found(None, "") if response.status_code < 400 else Found(None, response.text[:300])
    errors = body.get("errors")
    if not errors:
        if response.status_code < 400 and not isinstance(body.get("data"), dict):
            return Found("NO_DATA", "answer without data")
        return Found(None, "") if response.status_code < 400 else Found(None, response.text[:300])
    if not isinstance(errors, list):  # e.g. {"errors": "[API] Invalid API key ..."} with a 200
        return Found("REFUSED", str(errors))
    codes = sorted({str((e.get("extensions") or {}).get("code")) for e in errors if isinstance(e, dict)} - {"None"})
    text = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict))
    if any("PAGINATION" in c for c in codes) or re.search(r"(?i)paginat\w* .*limit|25,000", text):
        codes = ["PAGINATION", *codes]
    preferred = ("THROTTLED", "ACCESS_DENIED", "INTERNAL_SERVER_ERROR", "PAGINATION")
    code = next((c for c in preferred if c in codes), codes[0] if codes else "QUERY_ERROR")
    return Found(code, text, {"body": body})


ERRORS = ErrorTable(
    "shopify",
    [
        Rule(ConfigError, status=402, hint="the shop is frozen (unpaid)"),
        Rule(ConfigError, status=404, hint="no such shop or API version: check shop_url and api_version"),
        Rule(ConfigError, status=423, hint="the shop is locked"),
        Rule(RateLimitedError, code="THROTTLED", wait=lambda response, found: throttle_wait(found.extra["body"])),
        Rule(ConfigError, code=("ACCESS_DENIED", "REFUSED"), hint="check the access token and the app's scopes"),
        Rule(RetryableError, code=("INTERNAL_SERVER_ERROR", "NO_DATA")),
        Rule(DeepPagingRefused, code="PAGINATION"),
    ],
    extract=_graphql_errors,
)


class ShopifyClient(HttpConnector):
    """Admin GraphQL transport: auth header, GraphQL error mapping, cost-based pacing."""

    name = "shopify"
    errors = ERRORS

    def __init__(
        self,
        shop_url: str,
        token: str,
        api_version: str,
        *,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        client: httpx.Client | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        # a custom app's token is a fixed header; an expiring one comes from ``auth`` per request
        headers = {"X-Shopify-Access-Token": token} if auth is None else None
        super().__init__(shop_url, headers=headers, auth=auth, retry=retry, client=client)
        if client is not None and auth is not None:  # an injected client gets the rotating token too
            self.client.auth = auth
        self.path = f"/admin/api/{api_version}/graphql.json"
        self.sleep = sleep
        self.paced_seconds = 0.0
        #: last reported (currentlyAvailable, restoreRate), and each document's requested cost
        self._bucket: tuple[float, float] | None = None
        self._costs: dict[str, float] = {}

    def query(self, document: str, variables: dict[str, Any]) -> JSON:
        """Run one query (with retries), first waiting until the bucket can hold its known cost."""
        self.pace(self._costs.get(document))
        body = self.send_json("POST", self.path, json={"query": document, "variables": variables})
        self._note_cost(document, body)
        return body

    def query_once(self, document: str, variables: dict[str, Any]) -> JSON:
        """A mutation that must not run twice: throttled answers (nothing ran) are waited out and
        sent again; any other failure is raised for the caller to look before it tries again."""
        while True:
            self.pace(self._costs.get(document))
            try:
                body = self.send_json_once("POST", self.path, json={"query": document, "variables": variables})
            except RateLimitedError as exc:
                self.sleep(exc.wait_seconds if exc.wait_seconds is not None else 1.0)
                continue
            self._note_cost(document, body)
            return body

    def _note_cost(self, document: str, body: JSON) -> None:
        cost = (body.get("extensions") or {}).get("cost") or {}
        status = cost.get("throttleStatus") or {}
        try:
            self._costs[document] = float(cost["requestedQueryCost"])
            self._bucket = (float(status["currentlyAvailable"]), float(status["restoreRate"]))
        except (KeyError, TypeError, ValueError):
            self._bucket = None

    def pace(self, requested: float | None) -> None:
        """Sleep until the last reported bucket refills to ``requested`` (elapsed time not counted)."""
        if requested is None or self._bucket is None:
            return
        available, rate = self._bucket
        if available < requested and rate > 0:
            wait = math.ceil((requested - available) / rate * 1000) / 1000  # never a hair short
            self.paced_seconds += wait
            self.sleep(wait)
            self._bucket = (requested, rate)


def throttle_wait(body: JSON) -> float | None:
    """Seconds until the bucket can hold the requested cost: (requested - available) / restoreRate."""
    cost = (body.get("extensions") or {}).get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        wait = (float(cost["requestedQueryCost"]) - float(status["currentlyAvailable"])) / float(status["restoreRate"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return max(0.0, math.ceil(wait * 1000) / 1000)


def shopify_time(ts: datetime) -> str:
    """A search-syntax timestamp; whole seconds, rounded down so ``>=`` never skips a record."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ShopifySource(Source):
    """Customers and orders from the Shopify Admin GraphQL API (see the module docstring)."""

    kind: ClassVar[str] = "shopify"
    Config: ClassVar[type[SourceConfig]] = ShopifyConfig

    def __init__(
        self,
        config: SourceConfig,
        runtime: Runtime,
        secret: str | None = None,
        *,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(config, runtime, secret)
        secret = self.secret
        if not isinstance(config, ShopifyConfig):
            raise ConfigError("shopify source needs a [source] table with type = 'shopify'")
        self.settings = config
        self.tokens: ShopifyTokens | None = None
        auth: RefreshingAuth | None = None
        if config.refresh_token is not None:  # expiring offline tokens; else a custom app's, as it was
            from connectors.shopify.tokens import ShopifyTokens

            self.tokens = ShopifyTokens(
                config.shop_url,
                client_id=config.client_id,
                client_secret=config.client_secret.get_secret_value() if config.client_secret else None,
                seed=TokenPair(secret, config.refresh_token.get_secret_value()),
                store=runtime.credentials,
                now=runtime.now,
            )
            auth = RefreshingAuth(self.tokens, "X-Shopify-Access-Token", "{}")
        self.auth = auth
        self.client = ShopifyClient(
            config.shop_url,
            secret or "",
            config.api_version,
            retry=runtime.retry_policy(),
            sleep=runtime.sleep,
            client=client,
            auth=auth,
        )
        self.problems = 0
        #: follow-up queries for orders with more line items than the order query asks for
        self.followups = 0
        self._bulk: BulkExport | None = None

    def bulk_export(self) -> BulkExport | None:
        if not self.settings.bulk_backfill:
            return None
        if not self.secret and self.tokens is None:
            raise ConfigError("shopify: no Admin API access token is configured")
        if self._bulk is None:
            from connectors.shopify.bulk import ShopifyBulkExport

            self._bulk = ShopifyBulkExport(self.client)
        return self._bulk

    def page_size(self, stream: str) -> int:
        """The configured size, capped so one query stays within Shopify's 1000-point maximum."""
        return max(1, min(self.settings.page_size, (MAX_QUERY_COST - 2) // NODE_COST[stream]))

    def pull(self, stream: str, since: datetime | None) -> Iterator[Page]:
        if not self.secret and self.tokens is None:  # raised inside the caller's run, not while building
            raise ConfigError("shopify: no Admin API access token is configured")
        if stream not in QUERIES:
            raise PermanentError(f"shopify: unknown stream {stream!r}")
        first = self.page_size(stream)
        window_since = since
        cursor: str | None = None
        in_window = 0
        page_no = 0
        # records at the newest update time seen, to skip when a new window starts at that time
        edge_time: datetime | None = None
        edge_ids: set[str] = set()
        skip_time: datetime | None = None
        skip_ids: set[str] = set()
        while True:
            variables: dict[str, Any] = {"first": first, "after": cursor}
            if window_since is not None:
                variables["query"] = f"updated_at:>='{shopify_time(window_since)}'"
            try:
                body = self.client.query(QUERIES[stream], variables)
            except DeepPagingRefused:
                if cursor is None:
                    raise
                body = None
            if body is not None:
                page_no += 1
                connection = body["data"].get(stream) or {}
                nodes = connection.get("nodes") or []
                page = self.parse_page(stream, nodes, page_no)
                if stream == "orders":
                    self.complete_lines(page, nodes)
                page.problems += [Problem(f"{stream} page {page_no}", p) for p in self.client.encoding_problems]
                self.client.encoding_problems.clear()
                if skip_time is not None:
                    page = _drop_seen(page, skip_time, skip_ids)
                for record_id, updated in _updates(page):
                    if edge_time is None or updated > edge_time:
                        edge_time, edge_ids = updated, {record_id}
                    elif updated == edge_time:
                        edge_ids.add(record_id)
                yield page
                info = connection.get("pageInfo") or {}
                if not info.get("hasNextPage"):
                    return
                in_window += len(nodes)
                cursor = info.get("endCursor")
                if in_window + first <= self.settings.window_objects and cursor:
                    continue
            # start a new window at the newest update time seen
            if edge_time is None or (window_since is not None and edge_time <= window_since):
                raise PermanentError(
                    f"shopify: more than {in_window} {stream} share one update time; cannot page past them"
                )
            log.info("shopify %s: starting a new updated_at window after %d objects", stream, in_window)
            window_since, cursor, in_window = edge_time, None, 0
            skip_time, skip_ids = edge_time, set(edge_ids)

    def parse_page(self, stream: str, nodes: list[Any], page_no: int) -> Page:
        """Map nodes to records; a node that cannot be read becomes a Problem, never an exception."""
        page = Page()
        parse = parse_customer if stream == "customers" else parse_order
        for k, node in enumerate(nodes, start=1):
            gid = node.get("id") if isinstance(node, dict) else None
            ref = gid if isinstance(gid, str) and gid else f"{stream} page {page_no} item {k}"
            try:
                record = parse(node)
            except Unreadable as exc:
                page.problems.append(Problem(ref=ref, reason=exc.reason))
                continue
            page.add(record)
        self.problems += len(page.problems)
        return page

    def complete_lines(self, page: Page, nodes: list[Any]) -> None:
        """Fetch the rest of the line items of the orders on ``page`` that have more than one page."""
        more: dict[str, str] = {}
        for node in nodes:
            info = obj(obj(node, "lineItems"), "pageInfo")
            if info.get("hasNextPage") and isinstance(info.get("endCursor"), str) and isinstance(node.get("id"), str):
                more[node["id"]] = info["endCursor"]
        if not more:
            return
        complete: list[OrderRecord] = []
        for order in page.orders:
            cursor = more.get(order.order_id)
            lines = list(order.lines)
            try:
                while cursor is not None:
                    self.followups += 1
                    body = self.client.query(
                        ORDER_LINES_QUERY, {"id": order.order_id, "first": MORE_LINES_PAGE, "after": cursor}
                    )
                    connection = obj(body["data"].get("order"), "lineItems")
                    lines += parse_lines(connection)
                    info = obj(connection, "pageInfo")
                    cursor = info.get("endCursor") if info.get("hasNextPage") else None
            except Unreadable as exc:
                page.problems.append(Problem(order.order_id, exc.reason))
                self.problems += 1
                continue
            complete.append(replace(order, lines=tuple(lines)) if order.order_id in more else order)
        page.orders = complete

    def stats(self) -> dict[str, object]:
        retry = self.client.stats
        return {
            "requests": self.client.requests,
            "retries": retry.retries,
            "throttled": retry.throttled,
            "waited_seconds": round(retry.waited_seconds + self.client.paced_seconds, 3),
            "paced_seconds": round(self.client.paced_seconds, 3),
            "problems": self.problems,
            "line_followups": self.followups,
            **({"token_refreshes": self.tokens.refreshes} if self.tokens is not None else {}),
            **(self._bulk.stats() if self._bulk is not None else {}),
        }

    def close(self) -> None:
        if self._bulk is not None:
            self._bulk.close()
        if self.tokens is not None:
            self.tokens.close()
        self.client.close()


def _updates(page: Page) -> Iterator[tuple[str, datetime]]:
    for order in page.orders:
        yield order.order_id, order.updated_at
    for customer in page.customers:
        yield customer.customer_id, customer.updated_at


def _drop_seen(page: Page, when: datetime, ids: set[str]) -> Page:
    """Remove records a previous window already yielded (same id, same update time)."""
    page.orders = [o for o in page.orders if not (o.updated_at == when and o.order_id in ids)]
    page.customers = [c for c in page.customers if not (c.updated_at == when and c.customer_id in ids)]
    return page
