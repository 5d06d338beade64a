"""Shopify bulk export (``bulkOperationRunQuery``) of every order with its line items, and every customer.

A bulk query runs at Shopify, outside the cost bucket, and leaves a JSONL file: one object per line,
a nested connection's items on their own lines with ``__parentId``. Since 2026-01 ``groupObjects``
is false by default (and it is sent as false here), so a line item may come before or after its
order: the reader hands children back on their own and the worker attaches them at the end.

Polling uses ``bulkOperation(id:)`` (``currentBulkOperation`` is deprecated). Up to five bulk
queries may run per shop from 2026-01, so the orders and customers exports run side by side. A
start whose answer is lost is not repeated blindly: the running operations are listed and the
one with our query text is adopted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from connectors.kernel.bulk import BulkChunk, BulkExport, BulkJob, BulkStartRefused, ChildLine, download_resumable
from connectors.kernel.errors import ConnectorError, PermanentError, RetryableError
from connectors.kernel.records import CustomerRecord, OrderRecord, Page, Problem, Unreadable
from connectors.shopify.parsing import parse_customer, parse_line, parse_order

log = logging.getLogger(__name__)

_ORDER_FIELDS = """
      id email phone createdAt updatedAt cancelledAt test
      currentTotalPriceSet { shopMoney { amount currencyCode } }
      discountCodes
      customer { id }
      customerJourneySummary { firstVisit { source landingPage referrerUrl utmParameters { source medium } } }
      lineItems { edges { node { id sku quantity product { id } } } }"""

_CUSTOMER_FIELDS = """
      id updatedAt firstName lastName
      defaultEmailAddress { emailAddress marketingState marketingUpdatedAt }
      defaultPhoneNumber { phoneNumber }
      defaultAddress { countryCodeV2 }"""

#: the queries Shopify runs in bulk (no ``first``: a bulk query reads the whole connection)
BULK_QUERIES = {
    "orders": "{\n  orders {\n    edges {\n      node {" + _ORDER_FIELDS + "\n      }\n    }\n  }\n}\n",
    "customers": "{\n  customers {\n    edges {\n      node {" + _CUSTOMER_FIELDS + "\n      }\n    }\n  }\n}\n",
}

RUN_MUTATION = """
mutation RunBulkQuery($query: String!) {
  bulkOperationRunQuery(query: $query, groupObjects: false) {
    bulkOperation { id status createdAt }
    userErrors { field message code }
  }
}
"""

_OPERATION_FIELDS = "id status errorCode createdAt completedAt objectCount fileSize url partialDataUrl query"

STATUS_QUERY = f"""
query BulkOperationStatus($id: ID!) {{
  bulkOperation(id: $id) {{ {_OPERATION_FIELDS} }}
}}
"""

RUNNING_QUERY = f"""
query RunningBulkOperations {{
  bulkOperations(first: 5, query: "status:running operation_type:query", sortKey: CREATED_AT, reverse: true) {{
    nodes {{ {_OPERATION_FIELDS} }}
  }}
}}
"""


class ShopifyBulkExport(BulkExport):
    streams = ("customers", "orders")

    def __init__(self, client: Any, *, download_client: httpx.Client | None = None) -> None:
        #: the source's :class:`ShopifyClient` (auth, retries, cost pacing)
        self.client = client
        # the file lives on a storage host: no Shopify token goes there
        self.download_client = download_client or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        self.started = 0
        self.adopted = 0
        self.polls = 0

    def start(self, stream: str) -> BulkJob:
        query = BULK_QUERIES[stream]
        try:
            body = self.client.query_once(RUN_MUTATION, {"query": query})
        except (RetryableError, httpx.TransportError) as exc:
            # the answer may be lost after Shopify started it: adopt a running one with our query
            found = self._running_with(query)
            if found is not None:
                self.adopted += 1
                return found
            raise RetryableError(f"shopify: starting the {stream} export failed: {exc}") from None
        payload = (body.get("data") or {}).get("bulkOperationRunQuery") or {}
        errors = payload.get("userErrors") or []
        if errors:
            codes = {str(e.get("code")) for e in errors if isinstance(e, dict)}
            text = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict))
            if "OPERATION_IN_PROGRESS" in codes or "LIMIT_REACHED" in codes:
                found = self._running_with(query)
                if found is not None:
                    self.adopted += 1
                    return found
            raise BulkStartRefused(f"shopify refused the {stream} bulk export: {text}")
        operation = payload.get("bulkOperation")
        if not isinstance(operation, dict) or not operation.get("id"):
            raise PermanentError(f"shopify: the {stream} bulk export started without an id")
        self.started += 1
        return _job(operation)

    def check(self, job_id: str) -> BulkJob | None:
        self.polls += 1
        body = self.client.query(STATUS_QUERY, {"id": job_id})
        operation = (body.get("data") or {}).get("bulkOperation")
        return _job(operation) if isinstance(operation, dict) else None

    def _running_with(self, query: str) -> BulkJob | None:
        try:
            body = self.client.query(RUNNING_QUERY, {})
        except ConnectorError:
            return None
        nodes = ((body.get("data") or {}).get("bulkOperations") or {}).get("nodes") or []
        for node in nodes:
            if isinstance(node, dict) and node.get("query") == query:
                return _job(node)
        return None

    def download(self, url: str, dest: Path, progress: Callable[[int], None] | None = None) -> int:
        return download_resumable(self.download_client, url, dest, progress=progress, sleep=self.client.sleep)

    def read(self, stream: str, path: Path, offset: int, rows: int) -> Iterator[BulkChunk]:
        parse = parse_customer if stream == "customers" else parse_order
        with path.open("rb") as handle:
            handle.seek(offset)
            position = offset
            chunk = BulkChunk(Page())
            count = 0
            for raw in handle:
                line_start = position
                if not raw.endswith(b"\n"):  # a torn last line (a partial file): not a record
                    chunk.page.problems.append(Problem(f"{stream} file byte {line_start}", "incomplete last line"))
                    position += len(raw)
                    break
                position += len(raw)
                if raw.strip():
                    _read_line(raw, line_start, stream, parse, chunk)
                    count += 1
                if count >= rows:
                    chunk.end = position
                    yield chunk
                    chunk, count = BulkChunk(Page()), 0
            chunk.end = position
            if count or chunk.page.problems or position > offset:
                yield chunk

    def stats(self) -> dict[str, int]:
        return {"bulk_started": self.started, "bulk_adopted": self.adopted, "bulk_polls": self.polls}

    def close(self) -> None:
        self.download_client.close()


def _read_line(
    raw: bytes,
    at: int,
    stream: str,
    parse: Callable[[Any], OrderRecord | CustomerRecord],
    chunk: BulkChunk,
) -> None:
    ref = f"{stream} file byte {at}"
    try:
        node = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        chunk.page.problems.append(Problem(ref, "line is not JSON"))
        return
    if not isinstance(node, dict):
        chunk.page.problems.append(Problem(ref, "line is not an object"))
        return
    gid = node.get("id") if isinstance(node.get("id"), str) else None
    parent = node.get("__parentId")
    try:
        if parent is not None:
            if not isinstance(parent, str) or not gid:
                raise Unreadable("child line without an id or a parent id")
            chunk.children.append(ChildLine(parent, gid, parse_line(node)))
            return
        record = parse(node)
    except Unreadable as exc:
        chunk.page.problems.append(Problem(gid or ref, exc.reason))
        return
    chunk.page.add(record)


def _job(operation: dict[str, Any]) -> BulkJob:
    def when(key: str) -> datetime | None:
        value = operation.get(key)
        if not isinstance(value, str):
            return None
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None

    def number(key: str) -> int | None:
        try:
            return int(operation[key]) if operation.get(key) is not None else None
        except (TypeError, ValueError):
            return None

    return BulkJob(
        id=str(operation.get("id")),
        status=str(operation.get("status") or "CREATED"),
        created_at=when("createdAt"),
        url=operation.get("url") or None,
        partial_url=operation.get("partialDataUrl") or None,
        error_code=operation.get("errorCode") or None,
        object_count=number("objectCount") or 0,
        file_size=number("fileSize"),
    )
