"""Paginators as small state machines (dlt's style): where the next page starts, and whether there is one.

:func:`pages` drives any of them over a connector's ``send``: each answer goes through the retry
policy and the error table like every other request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from connectors.kernel.http import JSON, HttpConnector

Params = dict[str, Any]


class Paginator(ABC):
    def first(self, params: Params) -> Params:
        return dict(params)

    @abstractmethod
    def next(self, params: Params, body: JSON, response: httpx.Response) -> Params | None:
        """The parameters of the next page, or None after the last."""


@dataclass
class OffsetPaginator(Paginator):
    """``count``/``offset`` and a total in the body (Mailchimp's lists, segments and reports)."""

    items: str
    limit: int = 1000
    limit_param: str = "count"
    offset_param: str = "offset"
    total: str = "total_items"

    def first(self, params: Params) -> Params:
        return {**params, self.limit_param: self.limit, self.offset_param: 0}

    def next(self, params: Params, body: JSON, response: httpx.Response) -> Params | None:
        got = len(body.get(self.items) or [])
        offset = int(params[self.offset_param]) + got
        if not got or offset >= int(body.get(self.total) or 0):
            return None
        return {**params, self.offset_param: offset}


@dataclass
class NextLinkPaginator(Paginator):
    """A next-page URL in the body (JSON:API ``links.next``, Klaviyo): its query is the next page's."""

    path: tuple[str, ...] = ("links", "next")

    def next(self, params: Params, body: JSON, response: httpx.Response) -> Params | None:
        link: Any = body
        for key in self.path:
            link = link.get(key) if isinstance(link, dict) else None
        if not isinstance(link, str) or not link:
            return None
        return dict(parse_qsl(urlsplit(link).query, keep_blank_values=True))


@dataclass
class PageNumberPaginator(Paginator):
    """``page``/``per_page`` and the page count in a header (WordPress REST: ``X-WP-TotalPages``)."""

    per_page: int = 100
    page_param: str = "page"
    per_page_param: str = "per_page"
    total_pages_header: str = "X-WP-TotalPages"

    def first(self, params: Params) -> Params:
        return {**params, self.page_param: 1, self.per_page_param: self.per_page}

    def next(self, params: Params, body: JSON, response: httpx.Response) -> Params | None:
        page = int(params[self.page_param])
        try:
            total = int(response.headers.get(self.total_pages_header, "0"))
        except ValueError:
            total = 0
        return {**params, self.page_param: page + 1} if page < total else None


def pages(
    client: HttpConnector, path: str, paginator: Paginator, params: Params | None = None, method: str = "GET"
) -> Iterator[tuple[JSON, httpx.Response]]:
    """Every page's body and answer, in order."""
    current: Params | None = paginator.first(params or {})
    while current is not None:
        body, response = client.send_for_json(method, path, params=current)
        yield body, response
        current = paginator.next(current, body, response)
