"""WooCommerce REST v3 source: orders and customers changed since a watermark.

Orders come from ``/wp-json/wc/v3/orders`` with ``orderby=modified&order=asc``, ``modified_after``
(``dates_are_gmt=true``) and ``per_page`` up to 100, in windows that cannot skip a record modified
during the pull (:mod:`connectors.woocommerce.reading`). ``status=any`` leaves out the bin (WooCommerce
resolves ``any`` alone, even beside ``trash``), so a second walk with ``status=trash`` finds orders
moved there, merged into the first in update order: a trashed order stops counting.

Customers come from ``/wp-json/wc/v3/customers``, which has no ``modified_after`` and cannot sort by
update time (``orderby`` is one of id, include, name, registered_date). Every pull reads them all by id,
keeps those changed since the watermark and yields them sorted, so the watermark still moves in order.
That costs one request per 100 customers each pull: see the report for what a large store needs.

A store older than ``modified_after`` ignores it silently; the answer then holds records older than
asked, the source says so in a warning problem and reads every order again (still in update order).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from connectors.kernel.errors import ConfigError, PermanentError
from connectors.kernel.records import CustomerRecord, OrderRecord, Page, Problem, Unreadable
from connectors.kernel.runtime import Runtime
from connectors.kernel.source import Source, SourceConfig
from connectors.woocommerce.client import (
    MAX_PER_PAGE,
    SortRefused,
    WooCommerceClient,
    parse_credentials,
    transport_problem,
)
from connectors.woocommerce.reading import (
    Edge,
    FilterIgnored,
    merge,
    modified_windows,
    page_numbers,
    records_of,
    sorted_pages,
    whole_second,
)
from connectors.woocommerce.records import (
    NOT_COUNTED,
    customer_ref,
    item_id,
    modified_at,
    order_ref,
    parse_customer,
    parse_order,
)

IGNORED_FILTER = (
    "warning: the store ignored modified_after (WooCommerce before 5.8 does not know it): every {status} order "
    "was read again to find the changed ones; update WooCommerce to pull incrementally"
)
REFUSED_SORT = (
    "warning: the store cannot sort orders by modification date (WooCommerce from before 2020): every {status} "
    "order was read by id and sorted here; update WooCommerce to pull incrementally"
)


class WooCommerceConfig(SourceConfig):
    """``[source]`` for WooCommerce; the consumer key and secret come from the secret store, never from here."""

    type: Literal["woocommerce"] = "woocommerce"
    #: the site's root, e.g. ``https://shop.example.com`` (or ``sandbox``)
    base_url: str
    #: the order and customer meta key where a consent plugin keeps email marketing consent (e.g. Mailchimp
    #: for WooCommerce's ``mailchimp_woocommerce_is_subscribed``); none: consent UNKNOWN, email lists empty
    consent_meta_key: str | None = None
    page_size: int = Field(default=MAX_PER_PAGE, ge=1, le=MAX_PER_PAGE)
    #: send the key in the query (HTTPS only) for servers that drop the Authorization header
    query_string_auth: bool = False
    #: the customers endpoint's ``role`` filter (WooCommerce's default; ``all`` reads every user)
    customer_role: str = Field(default="customer", pattern=r"^[a-z0-9_-]+$")
    #: statuses added by plugins that must not count, besides pending, failed, cancelled, refunded, trash
    #: and checkout-draft
    uncounted_statuses: tuple[str, ...] = ()

    @field_validator("base_url")
    @classmethod
    def _site_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value == "sandbox":  # the worker's sandbox swaps in its emulator's URL
            return value
        if "://" not in value and "." in value:
            value = f"https://{value}"
        value = re.sub(r"/wp-json(/wc/v3)?$", "", value)
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("base_url must be the shop's address, such as https://shop.example.com")
        problem = transport_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("consent_meta_key")
    @classmethod
    def _meta_key(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class WooCommerceSource(Source):
    """Customers and orders from the WooCommerce REST API v3 (see the module docstring)."""

    kind: ClassVar[str] = "woocommerce"
    Config: ClassVar[type[SourceConfig]] = WooCommerceConfig
    #: orders first: they are read incrementally, so they progress even when a customers read is cut short
    streams: ClassVar[tuple[str, ...]] = ("orders", "customers")

    def __init__(
        self,
        config: SourceConfig,
        runtime: Runtime,
        secret: str | None = None,
        *,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(config, runtime, secret)
        if not isinstance(config, WooCommerceConfig):
            raise ConfigError("woocommerce source needs a [source] table with type = 'woocommerce'")
        self.settings = config
        self.not_counted = NOT_COUNTED | set(config.uncounted_statuses)
        self._http = client
        self._client: WooCommerceClient | None = None
        self.problems = 0
        self.full_reads = 0

    @property
    def client(self) -> WooCommerceClient:
        """Built on first use, so a missing key or a plain-HTTP URL fails inside the caller's run."""
        if self._client is None:
            self._client = WooCommerceClient(
                self.settings.base_url,
                parse_credentials(self.secret),
                query_string_auth=self.settings.query_string_auth,
                retry=self.runtime.retry_policy(),
                client=self._http,
            )
        return self._client

    def pull(self, stream: str, since: datetime | None) -> Iterator[Page]:
        if stream == "orders":
            walks = [self._orders(since, status) for status in ("any", "trash")]
            yield from merge(walks, self.settings.page_size)
        elif stream == "customers":
            params = {"orderby": "id", "order": "asc", "role": self.settings.customer_role}
            yield from self._read_whole("customers", params, since)
        else:
            raise PermanentError(f"woocommerce: unknown stream {stream!r}")

    # -- orders ----------------------------------------------------------------------------------------
    def _orders(self, since: datetime | None, status: str) -> Iterator[Page]:
        params = {"status": status, "orderby": "modified", "order": "asc"}
        size = self.settings.page_size
        edge = Edge()
        try:
            for items in modified_windows(self.client, "/orders", params, since, size, edge):
                yield self._page("orders", items)
            return
        except SortRefused:
            self.full_reads += 1
            warning = Problem("orders", REFUSED_SORT.format(status=status))
            yield from self._read_whole("orders", {**params, "orderby": "id"}, since, warning)
            return
        except FilterIgnored:
            self.full_reads += 1
            yield Page(problems=[Problem("orders", IGNORED_FILTER.format(status=status))])
        # every page again, in update order: keep what changed since the watermark and was not yielded yet
        floor = whole_second(since) if since is not None else None
        for items in page_numbers(self.client, "/orders", params, size):
            fresh = [i for i in items if not edge.seen(i) and _changed_since(i, floor)]
            edge.add(fresh)
            yield self._page("orders", fresh)

    # -- whole collections -----------------------------------------------------------------------------
    def _read_whole(
        self, stream: str, params: dict[str, Any], since: datetime | None, *warnings: Problem
    ) -> Iterator[Page]:
        """Every item by id, those changed since ``since`` sorted by update time (see the module docstring)."""
        floor = whole_second(since) if since is not None else None
        records: list[OrderRecord | CustomerRecord] = []
        problems = list(warnings)
        for items in page_numbers(self.client, f"/{stream}", params, self.settings.page_size):
            page = self._page(stream, [i for i in items if _changed_since(i, floor)])
            records += records_of(page)
            problems += page.problems
        yield from sorted_pages(records, problems, self.settings.page_size)

    # -- parsing ---------------------------------------------------------------------------------------
    def _page(self, stream: str, items: Iterable[Any]) -> Page:
        """Items → records; an item that cannot be read becomes a Problem, never an exception."""
        page = Page()
        consent_key = self.settings.consent_meta_key
        for k, item in enumerate(items, start=1):
            try:
                if stream == "orders":
                    page.add(parse_order(item, consent_key=consent_key, not_counted=self.not_counted))
                else:
                    page.add(parse_customer(item, consent_key=consent_key))
            except Unreadable as exc:
                page.problems.append(Problem(ref=_ref(stream, item, k), reason=exc.reason))
        page.problems += [Problem(stream, finding) for finding in self.client.encoding_problems]
        self.client.encoding_problems.clear()
        self.problems += len(page.problems)
        return page

    def stats(self) -> dict[str, object]:
        if self._client is None:
            return {"requests": 0, "problems": self.problems, "full_reads": self.full_reads}
        retry = self._client.stats
        return {
            "requests": self._client.requests,
            "retries": retry.retries,
            "throttled": retry.throttled,
            "waited_seconds": round(retry.waited_seconds, 3),
            "problems": self.problems,
            "full_reads": self.full_reads,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _changed_since(item: Any, floor: datetime | None) -> bool:
    """Changed at or after ``floor``; an item whose time cannot be read is kept (it becomes a problem)."""
    when = modified_at(item)
    return floor is None or when is None or when >= floor


def _ref(stream: str, item: Any, position: int) -> str:
    wc_id = item_id(item)
    if wc_id is None:
        return f"{stream} item {position} (no id)"
    return order_ref(wc_id) if stream == "orders" else customer_ref(wc_id)
