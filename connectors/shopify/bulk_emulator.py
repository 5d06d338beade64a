"""The Shopify emulator's bulk exports: ``bulkOperationRunQuery``, ``bulkOperation(id:)``,
``bulkOperations`` and the JSONL files, served as a storage host serves them.

As Shopify documents: the inner query is validated against the schema, must select at least one
connection, at most five, nested at most two levels; up to five bulk queries run per shop at
once (a sixth is refused with ``LIMIT_REACHED``); an export runs in the background
(``CREATED`` -> ``RUNNING`` -> ``COMPLETED``) and writes one JSON object per line, a nested
connection's items on their own lines with ``__parentId``. With ``groupObjects: false`` nothing
promises that a child follows its parent, so the emulator shuffles lines within a window: children
do arrive before their parent. ``objectCount`` and ``fileSize`` are ``UnsignedInt64`` (JSON strings).

Faults for tests: ``fail_after`` (objects, then ``FAILED`` with ``INTERNAL_SERVER_ERROR`` and a
``partialDataUrl``), ``rows_per_second`` (slow exports), ``download_rate`` (bytes/s),
``cut_download_after`` (the next download stops after that many bytes, as a dropped connection),
:meth:`BulkOperations.expire` (the URL stops working, status ``EXPIRED``).
"""

from __future__ import annotations

import json
import random
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from graphql import FieldNode, GraphQLError, SelectionSetNode, parse

from connectors.kernel.emulator import Request, Response
from connectors.shopify.synthetic import Node, iso

if TYPE_CHECKING:
    from connectors.shopify.emulator import Parsed, ShopifyEmulator

MAX_CONCURRENT = 5
MAX_CONNECTIONS = 5
MAX_DEPTH = 2
ROOTS = {"orders": "orders", "customers": "customers"}


@dataclass
class Export:
    id: str
    query: str
    created_at: datetime
    status: str = "CREATED"
    completed_at: datetime | None = None
    error_code: str | None = None
    object_count: int = 0
    root_object_count: int = 0
    file: Path | None = None
    file_size: int | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    partial: bool = False


class BulkOperations:
    def __init__(self, emulator: ShopifyEmulator) -> None:
        self.emulator = emulator
        self.exports: dict[str, Export] = {}
        self.max_concurrent = MAX_CONCURRENT
        self.rows_per_second: float | None = None
        self.fail_after: int | None = None
        self.download_rate: float | None = None
        self.cut_download_after: int | None = None
        self.shuffle_window = 64
        self.seed = 11
        #: every file request's headers (a test checks no Shopify token goes to the storage host)
        self.file_requests: list[dict[str, str]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="shopify-bulk-"))
        self._counter = 0
        self._threads: list[threading.Thread] = []
        emulator.mutations["bulkOperationRunQuery"] = self.run_query
        emulator.root_fields["bulkOperation"] = self.operation
        emulator.root_fields["bulkOperations"] = self.operations
        emulator.route("GET", "/bulk-files/{token}", self.serve)

    # -- GraphQL -----------------------------------------------------------------------------
    def run_query(self, args: dict[str, Any]) -> dict[str, Any]:
        query = str(args.get("query") or "")
        if args.get("groupObjects") is None:
            return _user_error("INVALID", "groupObjects is required from API version 2026-01 on", ["groupObjects"])
        problem, selection, parsed = self._check(query)
        if problem:
            return _user_error("INVALID", f"Invalid bulk query: {problem}", ["query"])
        running = [e for e in self.exports.values() if e.status in ("CREATED", "RUNNING")]
        if len(running) >= self.max_concurrent:
            return _user_error(
                "LIMIT_REACHED",
                f"A maximum of {self.max_concurrent} bulk query operations can run at the same time per shop.",
                None,
            )
        self._counter += 1
        export = Export(f"gid://shopify/BulkOperation/{720000 + self._counter}", query, self.emulator.store.now)
        self.exports[export.id] = export
        assert selection is not None and parsed is not None
        root = next(iter(_fields(selection, parsed)))
        nodes = list(self.emulator.store.orders if root.name.value == "orders" else self.emulator.store.customers)
        thread = threading.Thread(target=self._export, args=(export, root, parsed, nodes), daemon=True)
        self._threads.append(thread)
        thread.start()
        return {"bulkOperation": self.render(export), "userErrors": []}

    def operation(self, args: dict[str, Any]) -> dict[str, Any] | None:
        export = self.exports.get(str(args.get("id")))
        return self.render(export) if export else None

    def operations(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        wanted: dict[str, str] = {}
        for term in str(args.get("query") or "").split():
            match = re.fullmatch(r"(status|operation_type):(\w+)", term)
            if not match:
                from connectors.shopify.emulator import QueryError

                raise QueryError(f"emulator: unsupported bulkOperations search term {term!r}", "BAD_REQUEST")
            wanted[match.group(1)] = match.group(2).upper()
        found = [
            e
            for e in self.exports.values()
            if wanted.get("status", e.status) == e.status and wanted.get("operation_type", "QUERY") == "QUERY"
        ]
        found.sort(key=lambda e: e.created_at, reverse=bool(args.get("reverse", True)))
        return [self.render(e) for e in found]

    def render(self, export: Export) -> dict[str, Any]:
        url = f"{self.emulator.url}/bulk-files/{export.token}" if export.file is not None else None
        return {
            "__typename": "BulkOperation",
            "id": export.id,
            "status": export.status,
            "errorCode": export.error_code,
            "createdAt": iso(export.created_at),
            "completedAt": iso(export.completed_at) if export.completed_at else None,
            "objectCount": str(export.object_count),
            "rootObjectCount": str(export.root_object_count),
            "fileSize": str(export.file_size) if export.file_size is not None else None,
            "url": url if export.status == "COMPLETED" else None,
            "partialDataUrl": url if export.status == "FAILED" and export.partial else None,
            "query": export.query,
            "type": "QUERY",
        }

    def expire(self, export_id: str) -> None:
        """The file's signed URL runs out (Shopify keeps results for seven days)."""
        with self.emulator.lock:
            self.exports[export_id].status = "EXPIRED"

    def wait(self, timeout: float = 120.0) -> None:
        """Tests: until every export thread has finished."""
        for thread in self._threads:
            thread.join(timeout)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- the query rules --------------------------------------------------------------------
    def _check(self, query: str) -> tuple[str | None, SelectionSetNode | None, Parsed | None]:
        from connectors.shopify.emulator import Parsed, _fragments, _operations, validate_query

        try:
            document = parse(query)
        except GraphQLError as exc:
            return exc.message, None, None
        schema = self.emulator.schema
        errors = validate_query(schema, document) if schema is not None else []
        if errors:
            return errors[0].message, None, None
        parsed = Parsed(_operations(document), _fragments(document), [])
        operation = next(iter(parsed.operations.values()))
        roots = list(_fields(operation.selection_set, parsed))
        if len(roots) != 1 or roots[0].name.value not in ROOTS:
            return "the emulator exports exactly one of: orders, customers", None, None
        connections, depth = _connection_shape(roots[0], parsed)
        if connections > MAX_CONNECTIONS:
            return f"Bulk queries cannot contain more than {MAX_CONNECTIONS} connections.", None, None
        if depth > MAX_DEPTH:
            return f"Bulk queries cannot contain connections with a nesting depth greater than {MAX_DEPTH}.", None, None
        return None, operation.selection_set, parsed

    # -- the export ------------------------------------------------------------------------------
    def _export(self, export: Export, root: FieldNode, parsed: Parsed, nodes: list[Node]) -> None:
        from connectors.shopify.emulator import _connection_node_selection

        assert root.selection_set is not None
        selection = _connection_node_selection(root.selection_set, parsed)
        assert selection is not None
        plan = compile_plan(selection, parsed)
        path = self._dir / f"{export.token}.jsonl"
        rng = random.Random(self.seed)
        window: list[bytes] = []
        with self.emulator.lock:
            export.status = "RUNNING"
        started = time.monotonic()
        with path.open("wb") as out:
            for node in nodes:
                lines = export_lines(plan, node)
                window.extend(lines)
                with self.emulator.lock:
                    export.object_count += len(lines)
                    export.root_object_count += 1
                if len(window) >= self.shuffle_window:
                    self._flush(window, rng, out)
                if self.rows_per_second:
                    ahead = export.root_object_count / self.rows_per_second - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                if self.fail_after is not None and export.object_count >= self.fail_after:
                    self._flush(window, rng, out)
                    with self.emulator.lock:
                        export.status, export.error_code, export.partial = "FAILED", "INTERNAL_SERVER_ERROR", True
                        export.file, export.file_size = path, out.tell()
                    return
            self._flush(window, rng, out)
            size = out.tell()
        with self.emulator.lock:
            export.file, export.file_size = path, size
            export.status, export.completed_at = "COMPLETED", self.emulator.store.now

    @staticmethod
    def _flush(window: list[bytes], rng: random.Random, out: IO[bytes]) -> None:
        rng.shuffle(window)
        out.writelines(window)
        window.clear()

    # -- the storage host -------------------------------------------------------------------------
    def serve(self, request: Request) -> Response:
        self.file_requests.append(dict(request.headers))
        token = request.params["token"]
        export = next((e for e in self.exports.values() if e.token == token), None)
        if export is None or export.file is None:
            return Response(404, raw=b"<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        if export.status == "EXPIRED":
            body = b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>"
            return Response(400, raw=body, content_type="application/xml")
        size = export.file.stat().st_size
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", request.header("Range") or "")
        status = 200
        headers = {"Accept-Ranges": "bytes"}
        if match:
            start = int(match.group(1))
            if start >= size:
                return Response(416, raw=b"", headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        end = size
        declared = None
        if self.cut_download_after is not None:
            end, declared = min(size, start + self.cut_download_after), size - start
            self.cut_download_after = None
        return Response(
            status,
            headers=headers,
            content_type="application/jsonl",
            file=(export.file, start, end),
            rate=self.download_rate,
            declared_length=declared,
        )


def _user_error(code: str, message: str, field_path: list[str] | None) -> dict[str, Any]:
    return {"bulkOperation": None, "userErrors": [{"code": code, "message": message, "field": field_path}]}


def _fields(selection: SelectionSetNode, parsed: Parsed) -> list[FieldNode]:
    from connectors.shopify.emulator import _fields as fields

    return list(fields(selection, parsed))


def _is_connection(node: FieldNode, parsed: Parsed) -> bool:
    if node.selection_set is None:
        return False
    return any(f.name.value in ("edges", "nodes") for f in _fields(node.selection_set, parsed))


def _connection_shape(root: FieldNode, parsed: Parsed) -> tuple[int, int]:
    """(connections in the query, deepest nesting of connections)."""
    count, depth = 0, 0

    def walk(node: FieldNode, level: int) -> None:
        nonlocal count, depth
        if node.selection_set is None:
            return
        if _is_connection(node, parsed):
            count += 1
            level += 1
            depth = max(depth, level)
        for child in _fields(node.selection_set, parsed):
            walk(child, level)

    walk(root, 0)
    return count, depth


#: a compiled selection: (output key, field name, kind, sub-plan); kinds below
Plan = list[tuple[str, str, int, Any]]
SCALAR, OBJECT, CONNECTION = 0, 1, 2


def compile_plan(selection: SelectionSetNode, parsed: Parsed) -> Plan:
    from connectors.shopify.emulator import _connection_node_selection

    plan: Plan = []
    for field_node in _fields(selection, parsed):
        name = field_node.name.value
        key = field_node.alias.value if field_node.alias else name
        if field_node.selection_set is None:
            plan.append((key, name, SCALAR, None))
        elif _is_connection(field_node, parsed):
            inner = _connection_node_selection(field_node.selection_set, parsed)
            plan.append((key, name, CONNECTION, compile_plan(inner, parsed) if inner else []))
        else:
            plan.append((key, name, OBJECT, compile_plan(field_node.selection_set, parsed)))
    return plan


def export_lines(plan: Plan, node: Node) -> list[bytes]:
    """The node's own line and one line per item of each nested connection (with ``__parentId``)."""
    children: list[bytes] = []
    own = _apply(plan, node, node.get("id"), children)
    return [json.dumps(own, separators=(",", ":")).encode() + b"\n", *children]


def _apply(plan: Plan, value: Node, parent_id: Any, children: list[bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name, kind, sub in plan:
        raw = value.get(name)
        if kind == SCALAR:
            out[key] = raw
        elif kind == CONNECTION:
            items = raw.get("nodes", []) if isinstance(raw, dict) else []
            for index, item in enumerate(items):
                if "id" not in item:  # synthetic items made in a test may lack one: as Shopify would give
                    item = {**item, "id": f"gid://shopify/LineItem/{_numeric(parent_id) * 1000 + index}"}
                line = _apply(sub, item, item.get("id"), children)
                line["__parentId"] = parent_id
                children.append(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        elif raw is None:
            out[key] = None
        elif isinstance(raw, list):
            out[key] = [_apply(sub, v, parent_id, children) for v in raw]
        else:
            out[key] = _apply(sub, raw, parent_id, children)
    return out


def _numeric(gid: Any) -> int:
    digits = re.sub(r"\D", "", str(gid))
    return int(digits) if digits else 0
