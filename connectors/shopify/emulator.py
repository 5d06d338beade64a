"""Contract emulator of the Shopify Admin GraphQL API, serving a :class:`SyntheticStore`.

``POST /admin/api/{version}/graphql.json`` with ``X-Shopify-Access-Token``. The query is parsed with
graphql-core and, when the 2026-04 introspection schema is available, validated against it, so a
field Shopify does not have (``Order.landingSite``) is refused as Shopify refuses it. The root
connections ``orders`` and ``customers`` are interpreted (``first`` <= 250, ``after``, ``sortKey``,
``query: "updated_at:>='…' AND updated_at:<='…'"``) and only the selected fields are rendered.

Throttling follows Shopify's calculated query cost: objects cost 1, scalars 0, a connection
``2 + first * (cost of one node)``; a single query may cost at most 1000; a leaky bucket (2000 points,
100/s restored by default) must hold the requested cost up front and is refunded the difference to
the actual cost afterwards. Every answer carries ``extensions.cost``. Cursor paging stops at 25,000
objects. The bucket's clock is injectable so tests that inject sleep do not wait.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_client_schema,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values
from graphql.utilities import value_from_ast_untyped
from graphql.validation import ASTValidationRule

from connectors.kernel.emulator import EmulatorServer, Faults, Request, Response
from connectors.kernel.specs import spec_bytes
from connectors.shopify.synthetic import Node, SyntheticStore

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "shpat_emulator_local_token_0001"  # noqa: S105 - a fixed fake for local runs
SCHEMA_FILE = "admin_2026-04.json.gz"
INVALID_TOKEN_BODY = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
MAX_FIRST = 250
MUTATION_COST = 10
JSONObj = dict[str, Any]

_SCHEMAS: dict[str, GraphQLSchema] = {}
_SCHEMA_LOCK = threading.Lock()


def load_schema(name: str = SCHEMA_FILE) -> GraphQLSchema:
    """Build (once per process: it takes over a second) the schema from the carried introspection file."""
    with _SCHEMA_LOCK:
        if name not in _SCHEMAS:
            data = json.loads(spec_bytes("shopify", name))
            # Shopify deprecates fields implementing non-deprecated interface fields: assume_valid
            _SCHEMAS[name] = build_client_schema(data.get("data", data), assume_valid=True)
        return _SCHEMAS[name]


#: every emulator (and contract test) in a process shares one schema object, and graphql-core does not
#: promise that validating against it from several threads at once is safe: one validation at a time
_VALIDATION = threading.Lock()


def validate_query(
    schema: GraphQLSchema, document: DocumentNode, rules: Sequence[type[ASTValidationRule]] | None = None
) -> list[GraphQLError]:
    with _VALIDATION:
        return validate(schema, document, rules)


class QueryError(Exception):
    """A request the emulator answers with a GraphQL ``errors`` list."""

    def __init__(self, message: str, code: str | None = None, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {"code": code, **extensions} if code else extensions

    def as_errors(self) -> list[JSONObj]:
        error: JSONObj = {"message": self.message}
        if self.extensions:
            error["extensions"] = self.extensions
        return [error]


@dataclass
class Parsed:
    """A parsed (and validated) query document, cached by its text."""

    operations: dict[str | None, OperationDefinitionNode]
    fragments: dict[str, FragmentDefinitionNode]
    errors: list[JSONObj]


# -- the query language subset -------------------------------------------------------------------
_TERM = re.compile(r"""^(updated_at|created_at):(>=|<=|>|<)['"]?([^'"\s]+)['"]?$""")


def parse_filter(query: str | None) -> list[tuple[str, str, datetime]]:
    """``updated_at:>='…' AND updated_at:<='…'`` → [(field, op, time)]; anything else is refused.

    Shopify silently ignores search terms it cannot parse and returns everything; the emulator is
    stricter on purpose so a malformed filter fails a test instead of passing unnoticed.
    """
    if not query or not query.strip():
        return []
    terms = []
    for raw in re.split(r"\s+AND\s+", query.strip()):
        match = _TERM.match(raw.strip())
        if not match:
            raise QueryError(f"emulator: unsupported search term {raw!r}", "BAD_REQUEST")
        field_name, op, value = match.groups()
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(f"emulator: invalid date in search term {raw!r}", "BAD_REQUEST") from None
        terms.append((field_name, op, when if when.tzinfo else when.replace(tzinfo=UTC)))
    return terms


def _matches(node: Node, terms: list[tuple[str, str, datetime]]) -> bool:
    for field_name, op, when in terms:
        value: datetime = node["_updated"] if field_name == "updated_at" else node["_created"]
        ok = {">=": value >= when, ">": value > when, "<=": value <= when, "<": value < when}[op]
        if not ok:
            return False
    return True


def encode_cursor(key: tuple[Any, int], offset: int) -> str:
    value = key[0].isoformat() if isinstance(key[0], datetime) else key[0]
    raw = json.dumps({"last_value": value, "last_id": key[1], "offset": offset}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[Any, int, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        value = data["last_value"]
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value, int(data["last_id"]), int(data["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise QueryError("Invalid cursor for current pagination", "BAD_REQUEST") from None


_SORT_KEYS: dict[str, Callable[[Node], tuple[Any, int]]] = {
    "ID": lambda n: (n["_n"], n["_n"]),
    "UPDATED_AT": lambda n: (n["_updated"], n["_n"]),
    "CREATED_AT": lambda n: (n["_created"], n["_n"]),
}


class ShopifyEmulator(EmulatorServer):
    """Admin GraphQL over a synthetic store, with Shopify's auth, validation, cost and paging rules."""

    name = "shopify-emulator"

    def __init__(
        self,
        store: SyntheticStore,
        *,
        token: str = DEFAULT_TOKEN,
        faults: Faults | None = None,
        validate: bool = True,
        bucket_size: float = 2000.0,
        restore_rate: float = 100.0,
        max_query_cost: int = 1000,
        max_page_depth: int = 25_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(faults)
        self.store = store
        self.token = token
        #: replaces the fixed-token check when set: expiring offline tokens
        self.token_check: Callable[[str | None], bool] | None = None
        self.bucket_size = bucket_size
        self.restore_rate = restore_rate
        self.max_query_cost = max_query_cost
        self.max_page_depth = max_page_depth
        self.clock = clock
        self.available = bucket_size
        self._stamp = clock()
        #: every query is validated against the carried 2026-04 schema (a missing file raises SpecMissing)
        self.schema: GraphQLSchema | None = load_schema() if validate else None
        self._parsed: dict[str, Parsed] = {}
        self._sorted: dict[tuple[str, str], tuple[int, list[tuple[Any, int]], list[Node]]] = {}
        #: every distinct query text received, for contract tests
        self.queries: list[str] = []
        self.throttled_count = 0
        #: (query text, requested cost, actual cost) of every answered query
        self.cost_log: list[tuple[str, int, int]] = []
        #: mutations and extra root fields by name: args -> the payload to render (a list: a connection)
        self.mutations: dict[str, Callable[[JSONObj], Any]] = {}
        self.root_fields: dict[str, Callable[[JSONObj], Any]] = {}
        #: bulk exports (``bulkOperationRunQuery``, ``bulkOperation``, ``bulkOperations``)
        from connectors.shopify.bulk_emulator import BulkOperations

        self.bulk = BulkOperations(self)
        self.route("POST", "/admin/api/{version}/graphql.json", self.graphql)

    # -- auth and faults ---------------------------------------------------------------------------
    def authorised(self, request: Request) -> bool:
        if request.path.startswith("/bulk-files/"):  # a storage host: the signed URL is the credential
            return True
        if request.path == "/admin/oauth/access_token":  # the client id and secret are its credential
            return True
        sent = request.header("X-Shopify-Access-Token")
        if self.token_check is not None:  # rotating tokens (connectors/shopify/oauth_emulator.py)
            return self.token_check(sent)
        return sent == self.token

    def unauthorised(self, request: Request) -> Response:
        return Response(401, INVALID_TOKEN_BODY)

    def throttled(self, request: Request) -> Response:
        """A forced throttle (fault injection): the bucket is drained, as when Shopify cuts limits."""
        with self.lock:
            requested = 50
            try:
                parsed, operation, variables = self._prepare(request)
                requested = self.requested_cost(operation.selection_set, parsed, variables)
            except (QueryError, ValueError):
                pass
            self._refill()
            self.available = 0.0
            return self._throttled_answer(requested)

    # -- the bucket --------------------------------------------------------------------------------
    def _refill(self) -> None:
        now = self.clock()
        self.available = min(self.bucket_size, self.available + (now - self._stamp) * self.restore_rate)
        self._stamp = now

    def _cost_extension(self, requested: int, actual: int | None) -> JSONObj:
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": float(self.bucket_size),
                    "currentlyAvailable": self.available,
                    "restoreRate": float(self.restore_rate),
                },
            }
        }

    def _throttled_answer(self, requested: int) -> Response:
        self.throttled_count += 1
        error = {
            "message": "Throttled",
            "extensions": {
                "code": "THROTTLED",
                "documentation": "https://shopify.dev/api/usage/rate-limits",
            },
        }
        return Response(200, {"errors": [error], "extensions": self._cost_extension(requested, None)})

    # -- the endpoint ------------------------------------------------------------------------------
    def graphql(self, request: Request) -> Response:
        with self.lock:
            response = self._answer(request)
            self.record(request, response.status, items=_count_nodes(response.body))
            return response

    def _answer(self, request: Request) -> Response:
        try:
            parsed, operation, variables = self._prepare(request)
            mutation = operation.operation.value == "mutation"
            # Shopify prices a mutation at 10 points, whatever it selects
            requested = MUTATION_COST if mutation else self.requested_cost(operation.selection_set, parsed, variables)
        except ValueError:
            return Response(400, {"errors": {"query": "Required parameter missing or invalid"}})
        except QueryError as exc:
            return Response(200, {"errors": exc.as_errors()})
        if requested > self.max_query_cost:
            message = (
                f"Query cost is {requested}, which exceeds the single query max cost limit ({self.max_query_cost})."
            )
            extensions = {"code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": self.max_query_cost}
            return Response(200, {"errors": [{"message": message, "extensions": extensions}]})
        self._refill()
        if self.available + 1e-6 < requested:  # float dust from the refill arithmetic
            return self._throttled_answer(requested)
        self.available -= requested
        try:
            data = self._render(operation.selection_set, None, parsed, variables, root=True, mutation=mutation)
        except QueryError as exc:
            self.available += requested
            return Response(200, {"errors": exc.as_errors(), "extensions": self._cost_extension(requested, 0)})
        actual = requested if mutation else self.actual_cost(operation.selection_set, parsed, variables, data)
        self.cost_log.append((str(request.json()["query"]), requested, actual))
        self.available = min(self.bucket_size, self.available + requested - actual)
        return Response(
            200,
            {"data": data, "extensions": self._cost_extension(requested, actual)},
            headers={"X-Shopify-API-Version": request.params.get("version", "")},
        )

    def _prepare(self, request: Request) -> tuple[Parsed, OperationDefinitionNode, JSONObj]:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise ValueError("no query")
        text: str = body["query"]
        parsed = self._parse(text)
        if parsed.errors:
            raise _Refused(parsed.errors)
        name = body.get("operationName")
        if name is None and len(parsed.operations) == 1:
            operation = next(iter(parsed.operations.values()))
        elif name in parsed.operations:
            operation = parsed.operations[name]
        else:
            raise QueryError("An operation name is required when several operations are sent")
        kind = operation.operation.value
        if kind == "mutation":
            for field_node in _fields(operation.selection_set, parsed):
                if field_node.name.value not in self.mutations:
                    raise QueryError(f"emulator: mutation {field_node.name.value} is not supported", "BAD_REQUEST")
        elif kind != "query":
            raise QueryError(f"emulator: {kind} is not supported", "BAD_REQUEST")
        raw_variables = body.get("variables") or {}
        if not isinstance(raw_variables, dict):
            raise QueryError("Variables must be an object", "BAD_REQUEST")
        variables: JSONObj = raw_variables
        if self.schema is not None:
            coerced = get_variable_values(self.schema, operation.variable_definitions or (), raw_variables)
            if isinstance(coerced, list):
                raise _Refused([_error_json(e) for e in coerced])
            variables = dict(coerced.coerced)
        return parsed, operation, variables

    def _parse(self, text: str) -> Parsed:
        if text in self._parsed:
            return self._parsed[text]
        self.queries.append(text)
        try:
            document = parse(text)
        except GraphQLError as exc:
            result = Parsed({}, {}, [_error_json(exc)])
        else:
            errors = [_error_json(e) for e in validate_query(self.schema, document)] if self.schema else []
            result = Parsed(_operations(document), _fragments(document), errors)
        self._parsed[text] = result
        return result

    # -- rendering ---------------------------------------------------------------------------------
    def _render(
        self,
        selection: SelectionSetNode,
        value: Node | None,
        parsed: Parsed,
        variables: JSONObj,
        root: bool = False,
        mutation: bool = False,
    ) -> JSONObj:
        out: JSONObj = {}
        for node in _fields(selection, parsed):
            key = node.alias.value if node.alias else node.name.value
            name = node.name.value
            args = _arguments(node, variables)
            if mutation:
                out[key] = self._value(self.mutations[name](args), node, args, parsed, variables)
                continue
            if root:
                out[key] = self._root_field(name, args, node, parsed, variables)
                continue
            assert value is not None
            if name == "__typename":
                out[key] = value.get("__typename")
                continue
            out[key] = self._value(value.get(name), node, args, parsed, variables)
        return out

    def _value(self, raw: Any, node: FieldNode, args: JSONObj, parsed: Parsed, variables: JSONObj) -> Any:
        if raw is None or node.selection_set is None:
            return raw
        if isinstance(raw, dict) and "nodes" in raw and ("first" in args or "last" in args):
            first = _page_size(args)
            items = raw["nodes"]
            start = 0
            if args.get("after"):
                start = decode_cursor(str(args["after"]))[2]
            page = items[start : start + first]
            cursors = [encode_cursor((start + i + 1, 0), start + i + 1) for i in range(len(page))]
            return self._connection(
                node.selection_set, page, cursors, start + first < len(items), start > 0, parsed, variables
            )
        if isinstance(raw, list):
            return [self._render(node.selection_set, item, parsed, variables) for item in raw]
        return self._render(node.selection_set, raw, parsed, variables)

    def _root_field(self, name: str, args: JSONObj, node: FieldNode, parsed: Parsed, variables: JSONObj) -> Any:
        if name == "__typename":
            return "QueryRoot"
        if name == "shop":
            shop = {"name": "Demo Shop", "currencyCode": "USD", "myshopifyDomain": "demo-shop.myshopify.com"}
            return self._value(shop, node, args, parsed, variables)
        if name in self.root_fields:
            found = self.root_fields[name](args)
            if isinstance(found, list):  # a connection over the handler's nodes (first page only)
                assert node.selection_set is not None
                first_page = found[: _page_size(args)]
                marks = [encode_cursor((i + 1, 0), i + 1) for i in range(len(first_page))]
                more = len(found) > len(first_page)
                return self._connection(node.selection_set, first_page, marks, more, False, parsed, variables)
            return self._value(found, node, args, parsed, variables)
        if name in ("order", "customer"):
            gid = str(args.get("id") or "")
            kind = "Order" if name == "order" else "Customer"
            found = self.store.find(gid) if gid.startswith(f"gid://shopify/{kind}/") else None
            return self._value(found, node, args, parsed, variables)
        if name not in ("orders", "customers"):
            return None
        assert node.selection_set is not None
        if args.get("last") is not None or args.get("before") is not None or args.get("reverse"):
            raise QueryError("emulator: only forward paging (first/after, no reverse) is supported", "BAD_REQUEST")
        first = _page_size(args)
        sort_key = str(args.get("sortKey") or "ID")
        if sort_key not in _SORT_KEYS:
            raise QueryError(f"emulator: sortKey {sort_key} is not supported", "BAD_REQUEST")
        terms = parse_filter(args.get("query"))
        keys, nodes = self._sorted_view(name, sort_key)
        start, offset = 0, 0
        if args.get("after"):
            last_value, last_id, offset = decode_cursor(str(args["after"]))
            if offset >= self.max_page_depth:
                raise QueryError(
                    f"Pagination is limited to {self.max_page_depth:,} objects; use a search query "
                    "(for example an updated_at range) to narrow the results",
                    "PAGINATION_LIMIT_EXCEEDED",
                )
            start = bisect.bisect_right(keys, (last_value, last_id))
        page: list[Node] = []
        page_keys: list[tuple[Any, int]] = []
        has_next = False
        for i in range(start, len(nodes)):
            if not _matches(nodes[i], terms):
                continue
            if len(page) == first:
                has_next = True
                break
            page.append(nodes[i])
            page_keys.append(keys[i])
        cursors = [encode_cursor(k, offset + j + 1) for j, k in enumerate(page_keys)]
        return self._connection(node.selection_set, page, cursors, has_next, offset > 0, parsed, variables)

    def _connection(
        self,
        selection: SelectionSetNode,
        page: list[Node],
        cursors: list[str],
        has_next: bool,
        has_previous: bool,
        parsed: Parsed,
        variables: JSONObj,
    ) -> JSONObj:
        out: JSONObj = {}
        for node in _fields(selection, parsed):
            key = node.alias.value if node.alias else node.name.value
            name = node.name.value
            sub = node.selection_set
            if name == "nodes" and sub is not None:
                out[key] = [self._render(sub, item, parsed, variables) for item in page]
            elif name == "edges" and sub is not None:
                edges = [{"cursor": c, "node": item} for c, item in zip(cursors, page, strict=True)]
                out[key] = [self._render(sub, edge, parsed, variables) for edge in edges]
            elif name == "pageInfo" and sub is not None:
                info = {
                    "hasNextPage": has_next,
                    "hasPreviousPage": has_previous,
                    "startCursor": cursors[0] if cursors else None,
                    "endCursor": cursors[-1] if cursors else None,
                }
                out[key] = self._render(sub, info, parsed, variables)
            elif name == "__typename":
                out[key] = None
            else:
                raise QueryError(f"emulator: connection field {name} is not supported", "BAD_REQUEST")
        return out

    def _sorted_view(self, kind: str, sort_key: str) -> tuple[list[tuple[Any, int]], list[Node]]:
        cached = self._sorted.get((kind, sort_key))
        if cached is not None and cached[0] == self.store.version:
            return cached[1], cached[2]
        key = _SORT_KEYS[sort_key]
        nodes = sorted(self.store.orders if kind == "orders" else self.store.customers, key=key)
        keys = [key(n) for n in nodes]
        self._sorted[(kind, sort_key)] = (self.store.version, keys, nodes)
        return keys, nodes

    # -- cost --------------------------------------------------------------------------------------
    def requested_cost(self, selection: SelectionSetNode, parsed: Parsed, variables: JSONObj) -> int:
        """Shopify's documented static cost: objects 1, scalars 0, connections 2 + first * node."""
        total = 0
        for node in _fields(selection, parsed):
            if node.selection_set is None or node.name.value == "pageInfo":
                continue
            args = _arguments(node, variables)
            if "first" in args or "last" in args:
                node_selection = _connection_node_selection(node.selection_set, parsed)
                per_node = 1 + (self.requested_cost(node_selection, parsed, variables) if node_selection else 0)
                total += 2 + _page_size(args) * per_node
            else:
                total += 1 + self.requested_cost(node.selection_set, parsed, variables)
        return total

    def actual_cost(self, selection: SelectionSetNode, parsed: Parsed, variables: JSONObj, data: Any) -> int:
        """The same walk over what was returned: null objects cost nothing, connections what they held."""
        if not isinstance(data, dict):
            return 0
        total = 0
        for node in _fields(selection, parsed):
            value = data.get(node.alias.value if node.alias else node.name.value)
            if node.selection_set is None or node.name.value == "pageInfo" or value is None:
                continue
            args = _arguments(node, variables)
            if "first" in args or "last" in args:
                node_selection = _connection_node_selection(node.selection_set, parsed)
                items = _connection_items(node.selection_set, parsed, value)
                total += 2 + sum(
                    1 + (self.actual_cost(node_selection, parsed, variables, item) if node_selection else 0)
                    for item in items
                )
            elif isinstance(value, list):
                total += sum(1 + self.actual_cost(node.selection_set, parsed, variables, v) for v in value)
            else:
                total += 1 + self.actual_cost(node.selection_set, parsed, variables, value)
        return total


class _Refused(QueryError):
    """Validation errors: answered as a list, exactly as graphql-core reported them."""

    def __init__(self, errors: list[JSONObj]) -> None:
        super().__init__(errors[0]["message"] if errors else "invalid query")
        self.errors = errors

    def as_errors(self) -> list[JSONObj]:
        return self.errors


# -- AST helpers ----------------------------------------------------------------------------------
def _count_nodes(body: Any) -> int | None:
    """How many root-connection nodes an answer held (the request log's batch size)."""
    data = body.get("data") if isinstance(body, dict) else None
    for value in (data or {}).values():
        for key in ("nodes", "edges"):
            if isinstance(value, dict) and isinstance(value.get(key), list):
                return len(value[key])
    return None


def _error_json(error: GraphQLError) -> JSONObj:
    out: JSONObj = {"message": error.message}
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    out["extensions"] = {"code": "GRAPHQL_VALIDATION_FAILED"}
    return out


def _operations(document: DocumentNode) -> dict[str | None, OperationDefinitionNode]:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    out: dict[str | None, OperationDefinitionNode] = {op.name.value if op.name else None: op for op in ops}
    return out


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def _fields(selection: SelectionSetNode, parsed: Parsed) -> Iterator[FieldNode]:
    """The selection's fields, with fragments flattened (type conditions are not checked)."""
    for item in selection.selections:
        if isinstance(item, FieldNode):
            yield item
        elif isinstance(item, InlineFragmentNode):
            yield from _fields(item.selection_set, parsed)
        elif isinstance(item, FragmentSpreadNode):
            yield from _fields(parsed.fragments[item.name.value].selection_set, parsed)


def _arguments(node: FieldNode, variables: JSONObj) -> JSONObj:
    return {arg.name.value: value_from_ast_untyped(arg.value, variables) for arg in node.arguments or ()}


def _page_size(args: JSONObj) -> int:
    first = args.get("first", args.get("last"))
    if not isinstance(first, int) or first < 0:
        raise QueryError("you must provide one of first or last", "BAD_REQUEST")
    if first > MAX_FIRST:
        raise QueryError(f"The first argument must be at most {MAX_FIRST}", "BAD_REQUEST")
    return first


def _connection_node_selection(selection: SelectionSetNode, parsed: Parsed) -> SelectionSetNode | None:
    for node in _fields(selection, parsed):
        if node.name.value == "nodes":
            return node.selection_set
        if node.name.value == "edges" and node.selection_set is not None:
            for inner in _fields(node.selection_set, parsed):
                if inner.name.value == "node":
                    return inner.selection_set
    return None


def _connection_items(selection: SelectionSetNode, parsed: Parsed, value: JSONObj) -> list[Any]:
    for node in _fields(selection, parsed):
        key = node.alias.value if node.alias else node.name.value
        if node.name.value == "nodes":
            return list(value.get(key) or [])
        if node.name.value == "edges" and node.selection_set is not None:
            inner = next((f for f in _fields(node.selection_set, parsed) if f.name.value == "node"), None)
            if inner is not None:
                inner_key = inner.alias.value if inner.alias else inner.name.value
                return [edge.get(inner_key) for edge in value.get(key) or []]
    return []


def sandbox_emulator(world: Any) -> tuple[ShopifyEmulator, str]:
    """For ``worker.sandbox``: the sandbox's synthetic shop, on a large plan's restore rate so the demo
    is quick (the throttle itself is tested on the default plan's)."""
    return ShopifyEmulator(world.store, restore_rate=world.restore_rate, bucket_size=20000), DEFAULT_TOKEN
