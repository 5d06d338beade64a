"""Contract emulator of the WooCommerce REST API v3 (orders, customers) over a synthetic shop.

``GET /wp-json/wc/v3/orders`` and ``/customers`` as WordPress answers them: a JSON array, ``X-WP-Total``,
``X-WP-TotalPages`` and a ``Link`` header; parameters validated as the route's schema does (``per_page``
1-100, the ``orderby``/``order``/``status`` enums, ISO dates) with ``400 rest_invalid_param`` otherwise,
and unknown parameters ignored, as WordPress ignores them: the customers route has no ``modified_after``.
Orders honour ``modified_after``/``modified_before``/``after``/``before`` (strictly, in whole seconds;
against the GMT columns with ``dates_are_gmt=true``, else the site's local time) and ``status`` (``any``
is every status but ``trash``). ``knows_modified_after=False`` is a store older than that parameter (it
is ignored), ``sorts_by_modified=False`` one older still (``orderby=modified`` is refused).

Auth is WooCommerce's: Basic ``consumer_key:consumer_secret`` (the emulator stands for an HTTPS site) or
the same pair in the query. An unknown key is answered ``401 woocommerce_rest_cannot_view`` (WooCommerce
then treats the request as a visitor's), a wrong secret ``401 woocommerce_rest_authentication_error``.
Throttling and server faults answer as a host's firewall or proxy does: HTML pages, 429 or 503, with or
without ``Retry-After``.

Tests change what a record says with :meth:`WooCommerceEmulator.patch` (a status, meta, dates).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from connectors.kernel.emulator import EmulatorServer, Faults, Request, Response
from connectors.shopify.synthetic import Node, SyntheticStore
from connectors.woocommerce.synthetic import (
    SITE_OFFSET,
    JSONObj,
    customer_id,
    order_id,
    order_status,
    render_customer,
    render_order,
)

DEFAULT_KEY = "ck_emulator_0000000000000000000000000000001"
DEFAULT_SECRET = "cs_emulator_0000000000000000000000000000001"  # noqa: S105 - a fixed fake for local runs
DEFAULT_CREDENTIALS = f"{DEFAULT_KEY}:{DEFAULT_SECRET}"
API = "/wp-json/wc/v3"
ORDER_STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed", "checkout-draft")
ORDER_SORTS = ("date", "id", "include", "title", "slug", "modified")
CUSTOMER_SORTS = ("id", "include", "name", "registered_date")
ROLES = ("all", "administrator", "editor", "author", "contributor", "subscriber", "customer", "shop_manager")
#: WordPress's ``rest_parse_date`` pattern: RFC 3339, the zone optional
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}(?::\d{2})?)?$")
#: what a forced throttle answers, in turn: a firewall's 429 with a wait, a 503 with one, a 503 without
WAF_ANSWERS: tuple[tuple[int, str | None], ...] = ((429, "2"), (503, "3"), (503, None))
_PAGE = "<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"


def wp_error(status: int, code: str, message: str, **data: Any) -> Response:
    return Response(status, {"code": code, "message": message, "data": {"status": status, **data}})


def html_page(status: int, title: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, raw=_PAGE.format(title=title).encode(), headers=headers or {}, content_type="text/html")


class Invalid(Exception):
    """A parameter the route's schema refuses (answered ``400 rest_invalid_param``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message

    def response(self) -> Response:
        return wp_error(
            400,
            "rest_invalid_param",
            f"Invalid parameter(s): {self.param}",
            params={self.param: self.message},
            details={self.param: {"code": "rest_invalid_param", "message": self.message, "data": None}},
        )


class Query:
    """A request's parameters, read as WordPress reads them (the last of repeated ones wins)."""

    def __init__(self, request: Request) -> None:
        self.values = {k: v[-1] for k, v in request.query.items()}
        self.lists = request.query

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.values.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise Invalid(name, f"{name} is not of type integer.") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} (inclusive) and {high} (inclusive)" if high else f"greater than or equal to {low}"
            raise Invalid(name, f"{name} must be {bound}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.values.get(name, default)
        if value not in allowed:
            raise Invalid(name, f"{name} is not one of {', '.join(allowed[:-1])}, and {allowed[-1]}.")
        return value

    def boolean(self, name: str) -> bool:
        value = self.values.get(name, "false").lower()
        if value not in ("true", "false", "1", "0", ""):
            raise Invalid(name, f"{name} is not of type boolean.")
        return value in ("true", "1")

    def date(self, name: str, local_offset: timedelta | None) -> datetime | None:
        """A date parameter in UTC; a zone-less one is GMT, or local time when ``local_offset`` is given."""
        raw = self.values.get(name)
        if raw is None:
            return None
        if not _DATE.match(raw):
            raise Invalid(name, "Invalid date.")
        ts = datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00").replace(" ", "T"))
        if ts.tzinfo is not None:
            return ts.astimezone(UTC)
        return (ts - (local_offset or timedelta(0))).replace(tzinfo=UTC)

    def words(self, name: str) -> list[str]:
        raw = self.lists.get(name, []) + self.lists.get(f"{name}[]", [])
        return [w.strip() for value in raw for w in value.split(",") if w.strip()]


@dataclass(frozen=True)
class Row:
    """What the orders route filters and sorts on, for one order."""

    node: Node
    wc_id: int
    status: str
    created: datetime
    modified: datetime
    customer: int


class WooCommerceEmulator(EmulatorServer):
    """The orders and customers routes of WooCommerce REST v3 over a :class:`SyntheticStore`."""

    name = "woocommerce-emulator"

    def __init__(
        self,
        store: SyntheticStore,
        *,
        key: str = DEFAULT_KEY,
        secret: str = DEFAULT_SECRET,
        faults: Faults | None = None,
        knows_modified_after: bool = True,
        sorts_by_modified: bool = True,
        site_offset: timedelta = SITE_OFFSET,
        waf_answers: tuple[tuple[int, str | None], ...] = WAF_ANSWERS,
    ) -> None:
        super().__init__(faults)
        self.store = store
        self.key, self.secret = key, secret
        self.knows_modified_after = knows_modified_after
        self.sorts_by_modified = sorts_by_modified
        self.site_offset = site_offset
        self._waf = itertools.cycle(waf_answers)
        #: (kind, WooCommerce id) → fields laid over the rendered record (tests: statuses, meta, dates)
        self.patches: dict[tuple[str, int], JSONObj] = {}
        self._patched = 0
        self._rows: list[Row] = []
        self._rows_stamp: tuple[int, int, int] | None = None
        #: every list request's path and parameters (without credentials), for contract tests
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.route("GET", f"{API}/orders", self.list_orders)
        self.route("GET", f"{API}/customers", self.list_customers)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            self.routes.append((method, re.compile("^/.*$"), self.no_route))

    # -- what the shop holds ----------------------------------------------------------------------------
    def patch(self, kind: str, wc_id: int, **fields: Any) -> None:
        """Lay ``fields`` over a record as rendered (``kind`` "orders" or "customers"); dicts merge."""
        with self.lock:
            self.patches.setdefault((kind, wc_id), {}).update(fields)
            self._patched += 1

    def render(self, kind: str, node: Node) -> JSONObj:
        if kind == "orders":
            item = render_order(self.store, node, offset=self.site_offset)
        else:
            item = render_customer(node, offset=self.site_offset)
        for key, value in self.patches.get((kind, item["id"]), {}).items():
            item[key] = {**item[key], **value} if isinstance(value, dict) and isinstance(item.get(key), dict) else value
        return item

    def status_of(self, node: Node) -> str:
        patched = self.patches.get(("orders", order_id(node)), {}).get("status")
        return str(patched) if patched is not None else order_status(node)

    def _time(self, kind: str, node: Node, field: str) -> datetime:
        wc = order_id(node) if kind == "orders" else customer_id(node)
        patched = self.patches.get((kind, wc), {}).get(f"{field}_gmt")
        if isinstance(patched, str):
            try:
                return datetime.fromisoformat(patched).replace(tzinfo=UTC)
            except ValueError:
                pass
        when: datetime = node["_updated"] if field == "date_modified" else node["_created"]
        return when

    # -- auth and faults -------------------------------------------------------------------------------
    def credentials(self, request: Request) -> tuple[str, str] | None:
        header = request.header("Authorization") or ""
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            key, _, secret = decoded.partition(":")
            return key, secret
        keys, secrets = request.query.get("consumer_key"), request.query.get("consumer_secret")
        return (keys[-1], secrets[-1]) if keys and secrets else None

    def authorised(self, request: Request) -> bool:
        return self.credentials(request) == (self.key, self.secret)

    def unauthorised(self, request: Request) -> Response:
        given = self.credentials(request)
        if given is not None and given[0] == self.key:
            return wp_error(401, "woocommerce_rest_authentication_error", "Consumer secret is invalid.")
        return wp_error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")

    def throttled(self, request: Request) -> Response:
        status, wait = next(self._waf)
        title = "429 Too Many Requests" if status == 429 else "503 Service Temporarily Unavailable"
        return html_page(status, title, {"Retry-After": wait} if wait is not None else None)

    def server_error(self, request: Request, status: int) -> Response:
        return html_page(status, {500: "500 Internal Server Error", 502: "502 Bad Gateway"}.get(status, "503 Error"))

    def no_route(self, request: Request) -> Response:
        response = wp_error(404, "rest_no_route", "No route was found matching the URL and request method.")
        self.record(request, response.status)
        return response

    # -- the routes ------------------------------------------------------------------------------------
    def list_orders(self, request: Request) -> Response:
        return self._listing(request, "orders", self._select_orders)

    def list_customers(self, request: Request) -> Response:
        return self._listing(request, "customers", self._select_customers)

    def _listing(self, request: Request, kind: str, select: Callable[[Query], list[Node]]) -> Response:
        with self.lock:
            query = Query(request)
            self.queries.append(
                (request.path, {k: v for k, v in query.values.items() if not k.startswith("consumer_")})
            )
            try:
                page = query.integer("page", 1, 1)
                per_page = query.integer("per_page", 10, 1, 100)
                nodes = select(query)
            except Invalid as exc:
                response = exc.response()
                self.record(request, response.status)
                return response
            total = len(nodes)
            pages = math.ceil(total / per_page)
            items = [self.render(kind, n) for n in nodes[(page - 1) * per_page : page * per_page]]
            headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
            links = []
            if page > 1:
                links.append(f'<{self._link(request, query, min(page - 1, max(pages, 1)))}>; rel="prev"')
            if pages > page:
                links.append(f'<{self._link(request, query, page + 1)}>; rel="next"')
            if links:
                headers["Link"] = ", ".join(links)
            self.record(request, 200, items=len(items))
            return Response(200, items, headers=headers)

    def _link(self, request: Request, query: Query, page: int) -> str:
        params = {k: v for k, v in query.values.items() if not k.startswith("consumer_")}
        return f"{self.url}{request.path}?{urlencode({**params, 'page': page})}"

    def _order_rows(self) -> list[Row]:
        """Every order's status, dates and buyer, patches applied; rebuilt when the shop or a patch changes
        (a test that edits nodes directly bumps ``store.version``, as ``advance`` does)."""
        stamp = (self.store.version, len(self.store.orders), self._patched)
        if self._rows_stamp != stamp:
            self._rows = [
                Row(
                    node=node,
                    wc_id=order_id(node),
                    status=self.status_of(node),
                    created=self._time("orders", node, "date_created"),
                    modified=self._time("orders", node, "date_modified"),
                    customer=customer_id(node["customer"]) if node["customer"] else 0,
                )
                for node in self.store.orders
            ]
            self._rows_stamp = stamp
        return self._rows

    def _select_orders(self, query: Query) -> list[Node]:
        sorts = ORDER_SORTS if self.sorts_by_modified else tuple(s for s in ORDER_SORTS if s != "modified")
        orderby = query.choice("orderby", "date", sorts)
        order = query.choice("order", "desc", ("asc", "desc"))
        statuses = query.words("status") or ["any"]
        for status in statuses:
            if status not in ("any", "trash", *ORDER_STATUSES):
                raise Invalid("status", f"status[{statuses.index(status)}] is not one of any, trash, and others.")
        wanted = None if "any" in statuses else set(statuses)  # "any" wins, as WooCommerce resolves it
        local = None if query.boolean("dates_are_gmt") else self.site_offset
        after, before = query.date("after", local), query.date("before", local)
        modified_after, modified_before = query.date("modified_after", local), query.date("modified_before", local)
        if not self.knows_modified_after:  # an unknown parameter, ignored as WordPress ignores it
            modified_after = modified_before = None
        customer = query.integer("customer", 0, 0) if "customer" in query.values else None
        rows = [
            r
            for r in self._order_rows()
            if ((r.status != "trash") if wanted is None else (r.status in wanted))
            and (customer is None or r.customer == customer)
            and (after is None or r.created > after)  # WordPress's date query is strict on both ends
            and (before is None or r.created < before)
            and (modified_after is None or r.modified > modified_after)
            and (modified_before is None or r.modified < modified_before)
        ]
        keys: dict[str, Callable[[Row], Any]] = {
            "date": lambda r: (r.created, r.wc_id),
            "modified": lambda r: (r.modified, r.wc_id),  # WooCommerce adds the id: "modified ID"
        }
        rows.sort(key=keys.get(orderby, lambda r: r.wc_id), reverse=order == "desc")
        return [r.node for r in rows]

    def _select_customers(self, query: Query) -> list[Node]:
        orderby = query.choice("orderby", "name", CUSTOMER_SORTS)
        order = query.choice("order", "asc", ("asc", "desc"))
        role = query.choice("role", "customer", ROLES)
        email = query.values.get("email", "").lower()
        chosen = []
        for node in self.store.customers:
            patched_role = self.patches.get(("customers", customer_id(node)), {}).get("role", "customer")
            if role != "all" and patched_role != role:
                continue
            address = node["defaultEmailAddress"]
            if email and (address is None or address["emailAddress"].lower() != email):
                continue
            chosen.append(node)
        keys: dict[str, Callable[[Node], Any]] = {
            "id": customer_id,
            "include": customer_id,
            "name": lambda n: (f"{n['firstName'] or ''} {n['lastName'] or ''}".strip(), customer_id(n)),
            "registered_date": lambda n: (self._time("customers", n, "date_created"), customer_id(n)),
        }
        chosen.sort(key=keys[orderby], reverse=order == "desc")
        return chosen


def sandbox_emulator(world: Any) -> tuple[WooCommerceEmulator, str]:
    """For ``worker.sandbox``: the sandbox's synthetic shop, as a WooCommerce store."""
    return WooCommerceEmulator(world.store), DEFAULT_CREDENTIALS
