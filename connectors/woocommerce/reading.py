"""How WooCommerce collections are walked so that every record arrives once, in update order.

Orders (``orderby=modified&order=asc``, ties by id as WooCommerce sorts them) are read in *windows*:
each request asks ``modified_after`` the newest update time seen so far (minus a second: the filter
is a strict "after" on whole seconds) and starts again at page 1, skipping the records already seen at
exactly that time. Page numbers alone would skip a record whenever one on an earlier page is modified
during the pull (it moves to the end and everything after it shifts back by one); a window that starts
at an update time cannot shift. Page numbers are used within a window only when a whole page shares one
second (a bulk edit), and to know whether there is more (``X-WP-TotalPages``, else ``Link: rel="next"``).

A store that ignores ``modified_after`` (older WooCommerce, before the parameter existed) answers with
records older than the window: :class:`FilterIgnored` tells the source to fall back to reading every
page. Collections that cannot be sorted by update time (customers, and orders on a very old store)
are read whole by id and sorted here: see :func:`sorted_pages`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.kernel.paginate import Params
from connectors.kernel.records import CustomerRecord, OrderRecord, Page, Problem
from connectors.woocommerce.client import WooCommerceClient, WordPressPaginator
from connectors.woocommerce.records import item_id, modified_at

SECOND = timedelta(seconds=1)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
Record = OrderRecord | CustomerRecord


class FilterIgnored(Exception):
    """The store answered ``modified_after`` with records older than it: it does not know the parameter."""


def wp_time(ts: datetime) -> str:
    """A query date for ``dates_are_gmt=true``: UTC, whole seconds, no zone (``2026-04-30T12:00:00``)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def whole_second(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(microsecond=0)


@dataclass
class Edge:
    """What was yielded so far, in update order: the newest time, the ids at exactly that time, and the
    ids of items whose time could not be read (yielded once, as problems)."""

    time: datetime | None = None
    ids: set[int] = field(default_factory=set)
    unreadable: set[int] = field(default_factory=set)

    def seen(self, item: Any) -> bool:
        wc_id, when = item_id(item), modified_at(item)
        if when is None:
            return wc_id is not None and wc_id in self.unreadable
        return self.time is not None and (when < self.time or (when == self.time and wc_id in self.ids))

    def add(self, items: Iterable[Any]) -> None:
        for item in items:
            wc_id, when = item_id(item), modified_at(item)
            if when is None:
                if wc_id is not None:
                    self.unreadable.add(wc_id)
            elif self.time is None or when > self.time:
                self.time, self.ids = when, {wc_id} if wc_id is not None else set()
            elif when == self.time and wc_id is not None:
                self.ids.add(wc_id)


def has_more(paginator: WordPressPaginator, page: int, items: list[Any], response: Any) -> bool:
    return paginator.next({paginator.page_param: page}, items, response) is not None


def modified_windows(
    client: WooCommerceClient, path: str, params: Params, since: datetime | None, per_page: int, edge: Edge
) -> Iterator[list[Any]]:
    """Items changed at or after ``since``, in update order, each once (see the module docstring)."""
    paginator = WordPressPaginator(per_page=per_page)
    window = whole_second(since) if since is not None else None
    page = 1
    while True:
        query = {**params, "page": page, "per_page": per_page}
        if window is not None:
            query.update(modified_after=wp_time(window - SECOND), dates_are_gmt="true")
        items, response = client.get_list(path, query)
        if window is not None and any((t := modified_at(i)) is not None and t < window - SECOND for i in items):
            raise FilterIgnored
        fresh = [i for i in items if not edge.seen(i)]
        edge.add(fresh)
        yield fresh
        if not has_more(paginator, page, items, response):
            return
        if edge.time is not None and (window is None or edge.time > window):
            window, page = edge.time, 1
        else:  # a whole page at one second: page on within it
            page += 1


def page_numbers(client: WooCommerceClient, path: str, params: Params, per_page: int) -> Iterator[list[Any]]:
    """Every page of a collection, by page number."""
    paginator = WordPressPaginator(per_page=per_page)
    current: Params | None = paginator.first(params)
    while current is not None:
        items, response = client.get_list(path, current)
        yield items
        current = paginator.next(current, items, response) if items else None


def sorted_pages(records: Iterable[Record], problems: list[Problem], size: int) -> Iterator[Page]:
    """Records (one per id, the newest copy) in update order, ``size`` a page; the problems come first."""
    latest: dict[str, Record] = {}
    for record in records:
        key = record.order_id if isinstance(record, OrderRecord) else record.customer_id
        if key not in latest or record.updated_at >= latest[key].updated_at:
            latest[key] = record
    ordered = sorted(latest.values(), key=lambda r: (r.updated_at, _number(r)))
    if problems:
        yield Page(problems=list(problems))
    for start in range(0, len(ordered), size):
        yield _page_of(ordered[start : start + size])


def merge(streams: list[Iterator[Page]], size: int) -> Iterator[Page]:
    """Streams of pages, each in update order, as one stream in update order (pages of ``size``)."""
    if len(streams) == 1:
        yield from streams[0]
        return
    entries = heapq.merge(*(_entries(s) for s in streams), key=lambda entry: entry[0])
    records: list[Record] = []
    problems: list[Problem] = []
    for _, entry in entries:
        if isinstance(entry, Problem):
            problems.append(entry)
            continue
        records.append(entry)
        if len(records) == size:
            yield _page_of(records, problems)
            records, problems = [], []
    if records or problems:
        yield _page_of(records, problems)


def _entries(pages: Iterator[Page]) -> Iterator[tuple[datetime, Record | Problem]]:
    """Each record keyed by its update time (never below an earlier key: merge needs sorted input);
    problems keyed by the record before them, so they travel with their page."""
    last = _EARLIEST
    for page in pages:
        for problem in page.problems:
            yield last, problem
        for record in records_of(page):
            last = max(last, record.updated_at)
            yield last, record


def records_of(page: Page) -> list[Record]:
    records: list[Record] = [*page.orders]
    records.extend(page.customers)
    return records


def _page_of(records: list[Record], problems: list[Problem] | None = None) -> Page:
    page = Page(problems=list(problems or []))
    for record in records:
        page.add(record)
    return page


def _number(record: Record) -> int:
    """The WooCommerce id inside ours (``woocommerce:order:1042`` → 1042), for WooCommerce's tie order."""
    ref = record.order_id if isinstance(record, OrderRecord) else record.customer_id
    tail = ref.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0
