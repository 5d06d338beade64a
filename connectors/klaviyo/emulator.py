"""A Klaviyo REST API emulator (revision 2026-07-15) over the shared harness: real HTTP, in-memory state.

The Klaviyo destination and a future engagement source are built against this server, so it answers
as Klaviyo documents it, and the official OpenAPI description carried in ``connectors/klaviyo/spec``
is the judge: each route's request schema, ``page[size]`` bounds, filter fields and operators
(``x-klaviyo-filters``), sort keys, scopes (``x-klaviyo-scopes``) and burst/steady/daily rate limits
(``x-klaviyo-ratelimit``) are read from that document, never restated here. ``CONTRACT.md`` beside
this file says where each behaviour was checked, and marks [U] what is our own choice.

Modelled: the ``revision`` header and ``Klaviyo-API-Key`` auth; JSON:API bodies and error bodies;
profile bulk import jobs (queued -> processing -> complete over polls, per-row ``import-errors``,
never a consent change); profile look-up by filter; list membership add/remove (set-like, consent
untouched); the unsubscribe job with its global-unsubscribe semantics, every call recorded; metrics
and events for engagement; fixed-window rate limits on an injectable clock; the harness ``Faults``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import random
import re
import string
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from connectors.kernel.emulator import EmulatorServer, Faults, LoggedRequest, Request, Response
from connectors.kernel.specs import OpenApiSchemas, load_spec

SPEC_NAME = "stable.json.gz"
SPEC = OpenApiSchemas("klaviyo", SPEC_NAME)
REVISION = "2026-07-15"
JSON_API = "application/vnd.api+json"

MAX_LIST_MEMBERS = 1000  # per add or remove call
MAX_IMPORT_PROFILES = 10_000  # per bulk import job
MAX_IMPORT_BYTES = 5_000_000  # "5MB" per job payload, read as decimal megabytes (the stricter reading)
MAX_PROFILE_BYTES = 100_000  # "100KB" per profile in a job
MAX_UNSUBSCRIBE_PROFILES = 100  # per unsubscribe job
MAX_FILTER_VALUES = 100  # ours, not documented: the most values one list-valued filter may carry
METRICS_PAGE = 200  # GET /api/metrics has no page[size]; "a maximum of 200 results per page"

SUBSCRIBED = "SUBSCRIBED"
UNSUBSCRIBED = "UNSUBSCRIBED"
NEVER_SUBSCRIBED = "NEVER_SUBSCRIBED"
ENGAGEMENT_METRICS = ("Opened Email", "Clicked Email")
UNSUBSCRIBE_PATH = "/api/profile-subscription-bulk-delete-jobs"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_REVISION_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: two Crockford characters per 10 bits, so an id takes 13 look-ups (seeding large accounts stays fast)
_CROCKFORD_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_IDENTIFIERS = ("email", "phone_number", "external_id")
_LOOKUP_DETAIL = "Each profile needs at least one identifier: email, phone_number or external_id."

T = TypeVar("T")


# -- what the spec says about each operation -----------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """Requests allowed per fixed window: ``burst`` a second, ``steady`` a minute, ``daily`` where documented."""

    burst: int
    steady: int
    daily: int | None = None


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    op_id: str
    body_schema: str | None
    limits: Limits
    scopes: frozenset[str]
    page_size: tuple[int, int, int] | None  # default, minimum, maximum
    filters: Mapping[str, Any]
    sorts: frozenset[str]


def _per_window(value: str | None) -> int | None:
    return None if value is None else int(value.split("/")[0])


def operation(method: str, path: str) -> Operation:
    """The spec's facts for ``method path`` (a path template exactly as ``stable.json`` spells it)."""
    op = load_spec("klaviyo", SPEC_NAME)["paths"][path][method.lower()]
    rate = op["x-klaviyo-ratelimit"]
    limits = Limits(int(rate["burst"].split("/")[0]), int(rate["steady"].split("/")[0]), _per_window(rate.get("daily")))
    ref = op.get("requestBody", {}).get("content", {}).get(JSON_API, {}).get("schema", {}).get("$ref")
    params = {p["name"]: p for p in op.get("parameters", [])}
    size = params.get("page[size]", {}).get("schema")
    return Operation(
        method=method,
        path=path,
        op_id=op["operationId"],
        body_schema=ref.rsplit("/", 1)[1] if ref else None,
        limits=limits,
        scopes=frozenset(op.get("x-klaviyo-scopes", [])),
        page_size=(size["default"], size["minimum"], size["maximum"]) if size else None,
        filters=op.get("x-klaviyo-filters", {}),
        sorts=frozenset(params.get("sort", {}).get("schema", {}).get("enum", [])),
    )


class _Cyclic(Exception):
    pass


def _inline(node: Any, schemas: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``$ref`` replaced by the schema it names (OpenAPI 3.0 ignores a ``$ref``'s
    siblings, so the reference alone stands for the node)."""
    if isinstance(node, list):
        return [_inline(item, schemas, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name in seen:
            raise _Cyclic(name)
        return _inline(schemas[name], schemas, (*seen, name))
    return {key: _inline(value, schemas, seen) for key, value in node.items()}


@functools.cache
def request_validator(schema: str) -> Any:
    """The validator of a request schema, with its references resolved once: the same checks as
    ``SPEC.validator`` (it is the fallback for a recursive schema), about twice as fast on a 1,000-row
    body, since jsonschema otherwise resolves every row's references again."""
    from openapi_schema_validator import OAS30Validator

    fallback = SPEC.validator(schema)
    try:
        inlined = _inline(
            {"$ref": f"#/components/schemas/{schema}"}, load_spec("klaviyo", SPEC_NAME)["components"]["schemas"]
        )
    except _Cyclic:
        return fallback
    return OAS30Validator(inlined)


# -- JSON:API errors --------------------------------------------------------------------------------
def error_object(
    status: int, code: str, title: str, detail: str, *, pointer: str | None = None, parameter: str | None = None
) -> dict[str, Any]:
    source: dict[str, str] = {}
    if pointer is not None:
        source["pointer"] = pointer
    if parameter is not None:
        source["parameter"] = parameter
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": source or {"pointer": "/data/"},
        "links": {},
        "meta": {},
    }


class ApiError(Exception):
    """A JSON:API error answer, raised anywhere inside a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.errors = errors or [error_object(status, code, title, detail, pointer=pointer, parameter=parameter)]
        self.headers = headers or {}

    def response(self) -> Response:
        return Response(self.status, {"errors": self.errors}, headers=dict(self.headers), content_type=JSON_API)


def invalid(detail: str, *, pointer: str | None = None, parameter: str | None = None) -> ApiError:
    return ApiError(400, "invalid", "Invalid input.", detail, pointer=pointer, parameter=parameter)


def not_found(detail: str = "Not found.", *, pointer: str | None = None) -> ApiError:
    return ApiError(404, "not_found", "Not found.", detail, pointer=pointer)


def throttled(seconds: int) -> Response:
    unit = "second" if seconds == 1 else "seconds"
    detail = f"Request was throttled. Expected available in {seconds} {unit}."
    error = ApiError(429, "throttled", "Request was throttled.", detail, headers={"Retry-After": str(seconds)})
    return error.response()


# -- fixed-window rate limits ------------------------------------------------------------------------
class FixedWindows:
    """Klaviyo's limiter: per bucket, a count in each fixed window (1 s burst, 60 s steady, a day if set)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._windows: dict[tuple[str, int], tuple[int, int]] = {}  # (bucket, window seconds) -> (index, count)

    def _count(self, bucket: str, size: int, now: float) -> tuple[int, int]:
        index = math.floor(now / size)
        seen, count = self._windows.get((bucket, size), (index, 0))
        return (index, count) if seen == index else (index, 0)

    def take(self, bucket: str, limits: Limits) -> dict[str, str] | int:
        """Count one request: the ``RateLimit-*`` headers (steady window), or the seconds to wait."""
        now = self.clock()
        windows = [(1, limits.burst), (60, limits.steady)]
        if limits.daily is not None:
            windows.append((86_400, limits.daily))
        wait = 0
        for size, limit in windows:
            index, count = self._count(bucket, size, now)
            if count >= limit:
                wait = max(wait, math.ceil((index + 1) * size - now))
        if wait:
            return max(wait, 1)
        for size, _ in windows:
            index, count = self._count(bucket, size, now)
            self._windows[(bucket, size)] = (index, count + 1)
        index, count = self._count(bucket, 60, now)
        return {
            "RateLimit-Limit": str(limits.steady),
            "RateLimit-Remaining": str(max(limits.steady - count, 0)),
            "RateLimit-Reset": str(max(math.ceil((index + 1) * 60 - now), 1)),
        }


# -- filters: equals(email,"a@x.com"), any(email,[...]), greater-than(datetime,2026-01-01T00:00:00Z) --
@dataclass(frozen=True)
class Condition:
    op: str
    field: str
    value: Any = None
    is_list: bool = False


class Quoted(str):
    """A filter value written in quotes: how strings must be given, and how datetimes must not be."""

    __slots__ = ()


_TOKEN = re.compile(r"\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[(),\[\]]|[^\s(),\[\]\"']+)\s*")
_OPERATORS = {"equals", "any", "greater-than", "less-than", "greater-or-equal", "less-or-equal", "has", "and"}


class _FilterParser:
    """Klaviyo's filter syntax: conditions joined by commas or ``and(...)``, strings quoted, dates bare."""

    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise invalid(f"Invalid filter near position {pos}.", parameter="filter")
            self.tokens.append(match.group(1))
            pos = match.end()
        self.pos = 0

    def parse(self) -> list[Condition]:
        conditions = self._expressions()
        if self.pos != len(self.tokens):
            raise self._error()
        return conditions

    def _error(self) -> ApiError:
        return invalid("Invalid filter provided.", parameter="filter")

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise self._error()
        self.pos += 1
        return token

    def _expect(self, token: str) -> None:
        if self._take() != token:
            raise self._error()

    def _expressions(self) -> list[Condition]:
        conditions = self._expression()
        while self._peek() == ",":
            self._take()
            conditions += self._expression()
        return conditions

    def _expression(self) -> list[Condition]:
        name = self._take()
        if name not in _OPERATORS:
            raise invalid(f"'{name}' is not a supported filter operator.", parameter="filter")
        self._expect("(")
        if name == "and":
            conditions = self._expressions()
        elif name == "has":
            conditions = [Condition("has", self._take())]
        else:
            field_name = self._take()
            self._expect(",")
            value, is_list = self._value()
            conditions = [Condition(name, field_name, value, is_list)]
        self._expect(")")
        return conditions

    def _value(self) -> tuple[Any, bool]:
        if self._peek() != "[":
            return self._scalar(), False
        self._take()
        values = [self._scalar()]
        while self._peek() == ",":
            self._take()
            values.append(self._scalar())
        self._expect("]")
        return values, True

    def _scalar(self) -> Any:
        token = self._take()
        if token[0] in "\"'":
            return Quoted(re.sub(r"\\(.)", r"\1", token[1:-1]))
        if token in ("(", ")", ",", "[", "]"):
            raise self._error()
        literals: dict[str, Any] = {"true": True, "false": False, "null": None}
        if token in literals:
            return literals[token]
        try:
            return int(token)
        except ValueError:
            pass
        try:
            return float(token)
        except ValueError:
            return token


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_filter(text: str, allowed: Mapping[str, Any]) -> list[Condition]:
    """The conditions of ``text``, checked against the operation's ``x-klaviyo-filters``."""
    checked: list[Condition] = []
    for cond in _FilterParser(text).parse():
        rules = allowed.get(cond.field)
        if rules is None:
            raise invalid(f"'{cond.field}' is not a valid field for this filter.", parameter="filter")
        kind = "none" if cond.op == "has" else "list" if cond.is_list else "single"
        if cond.op not in rules["operators"].get(kind, []):
            detail = f"'{cond.op}' is not a valid operator for '{cond.field}' with a {kind} value."
            raise invalid(detail, parameter="filter")
        values = cond.value if cond.is_list else [cond.value]
        if cond.is_list and len(values) > MAX_FILTER_VALUES:
            raise invalid(f"At most {MAX_FILTER_VALUES} values may be given to one filter.", parameter="filter")
        kind_of_value = rules.get("value", {})
        try:
            if kind_of_value.get("format") == "date-time":
                if any(isinstance(v, Quoted) for v in values):
                    raise ValueError("datetimes are given without quotes")
                values = [parse_datetime(v) for v in values]
            elif kind_of_value.get("type") == "string" and not all(isinstance(v, Quoted) for v in values):
                raise ValueError("strings are given in quotes")
            elif kind_of_value.get("type") == "number":
                values = [float(v) if isinstance(v, int | float) else float("x") for v in values]
        except ValueError:
            raise invalid(f"Invalid value for '{cond.field}' in filter.", parameter="filter") from None
        if cond.field in ("email", "phone_number") and all(isinstance(v, str) for v in values):
            values = [v.strip().lower() for v in values]
        checked.append(Condition(cond.op, cond.field, values if cond.is_list else values[0], cond.is_list))
    return checked


def matches(cond: Condition, value: Any) -> bool:
    if cond.op == "has":
        return value is not None
    if cond.op in ("any", "equals"):
        return value in cond.value if cond.is_list else value == cond.value
    if value is None:
        return False
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "greater-than": lambda a, b: bool(a > b),
        "less-than": lambda a, b: bool(a < b),
        "greater-or-equal": lambda a, b: bool(a >= b),
        "less-or-equal": lambda a, b: bool(a <= b),
    }
    return compare[cond.op](value, cond.value)


# -- state -------------------------------------------------------------------------------------------
def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def normal_email(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


@dataclass
class Profile:
    id: str
    created: datetime
    updated: datetime
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # first_name, location, properties, ...
    consent: str = NEVER_SUBSCRIBED  # email marketing
    consent_timestamp: datetime | None = None
    consent_method: str | None = None
    suppressions: list[tuple[str, datetime]] = field(default_factory=list)  # (reason, when)
    list_suppressions: list[tuple[str, str, datetime]] = field(default_factory=list)  # (list id, reason, when)

    @property
    def can_receive_email_marketing(self) -> bool:
        """The spec: true when the profile has no global suppression (so implicit for NEVER_SUBSCRIBED)."""
        return self.consent != UNSUBSCRIBED and not self.suppressions


@dataclass
class KList:
    id: str
    name: str
    created: datetime
    updated: datetime
    opt_in_process: str | None = "single_opt_in"
    members: dict[str, datetime] = field(default_factory=dict)  # profile id -> joined_group_at


@dataclass
class ImportJob:
    id: str
    created_at: datetime
    rows: list[Any]
    list_ids: list[str]
    status: str = "queued"
    polls: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    completed_count: int = 0
    failed_count: int = 0
    profile_ids: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Metric:
    id: str
    name: str
    created: datetime


@dataclass
class Event:
    id: str
    metric_id: str
    profile_id: str
    at: datetime
    properties: dict[str, Any]
    uuid: str


@dataclass
class Call:
    """One request as a handler sees it: the parsed body, the spec's operation, the batch size seen."""

    request: Request
    op: Operation
    base: str
    body: Any = None
    items: int | None = None

    def param(self, name: str) -> str | None:
        values = self.request.query.get(name)
        return values[0] if values else None

    def listed(self, name: str) -> list[str]:
        """A comma-separated (``explode: false``) array parameter."""
        raw = self.param(name)
        return [v for v in raw.split(",") if v] if raw else []


def _items(body: Any) -> int | None:
    """How many members or profiles a batch body carries, for the request log."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list):
        return len(data)
    profiles = data.get("attributes", {}).get("profiles", {}) if isinstance(data, dict) else {}
    rows = profiles.get("data") if isinstance(profiles, dict) else None
    return len(rows) if isinstance(rows, list) else None


class KlaviyoEmulator(EmulatorServer):
    """Start it, seed with ``create_list``/``add_profile``, point a client at ``emulator.url`` + ``/api/...``.

    ``clock`` drives the rate-limit windows (inject one to test throttling without sleeping);
    ``limits`` replaces every endpoint's spec limits (small ones make throttling testable);
    ``enforce_limits=False`` never answers 429 but still sends the headers; ``job_polls`` is
    (reads until processing, reads until complete) of an import job; ``scopes`` restricts the key.
    """

    name = "klaviyo"
    #: profiles (consent included), lists and engagement (the sandbox keeps them between commands)
    state_attributes = ("profiles", "lists", "metrics", "events")

    def __init__(
        self,
        api_key: str = "pk_emulator_0123456789abcdef0123456789",
        faults: Faults | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
        enforce_limits: bool = True,
        job_polls: tuple[int, int] = (1, 2),
        scopes: Sequence[str] | None = None,
        validate: bool = True,
        auto_create: bool = False,
        revisions: Sequence[str] = (REVISION,),
        storm_retry_after: int = 1,
        seed: int = 2026,
    ) -> None:
        super().__init__(faults)
        self.api_key = api_key
        self.limits = limits
        self.enforce_limits = enforce_limits
        self.job_polls = job_polls
        self.scopes = None if scopes is None else frozenset(scopes)
        self.validate = validate
        #: create unknown lists on first use (the sandbox cannot know a config's list ids beforehand)
        self.auto_create = auto_create
        self.revisions = frozenset(revisions)
        self.storm_retry_after = storm_retry_after
        self.windows = FixedWindows(clock)
        self.profiles: dict[str, Profile] = {}
        self.lists: dict[str, KList] = {}
        self.jobs: dict[str, ImportJob] = {}
        self.metrics: dict[str, Metric] = {}
        self.events: dict[str, Event] = {}
        #: (method, path, body) of every request body that reached a handler, for contract checks
        self.bodies: list[tuple[str, str, Any]] = []
        #: every unsubscribe job body accepted (``unsubscribe_calls`` counts refused ones too)
        self.unsubscribe_jobs: list[Any] = []
        self._by_identifier: dict[str, dict[str, str]] = {name: {} for name in _IDENTIFIERS}
        self._rng = random.Random(seed)
        self._last_ms = 0
        self._sequence = 0
        if validate:
            SPEC.validator("ListMembersAddQuery")  # fails loudly, now, when the description is missing
        for metric in ENGAGEMENT_METRICS:
            self.metric_id(metric)
        job = "/api/profile-bulk-import-jobs/{id}"
        members = "/api/lists/{id}/relationships/profiles"
        routes: list[tuple[str, str, Callable[[Call], Response], int | None]] = [
            ("POST", "/api/profile-bulk-import-jobs", self._import_create, MAX_IMPORT_BYTES),
            ("GET", "/api/profile-bulk-import-jobs/{job_id}", self._import_get, None),
            ("GET", job + "/import-errors", self._import_errors, None),
            ("GET", job + "/profiles", lambda c: self._import_profiles(c, ids_only=False), None),
            ("GET", job + "/relationships/profiles", lambda c: self._import_profiles(c, ids_only=True), None),
            ("GET", job + "/lists", lambda c: self._import_lists(c, ids_only=False), None),
            ("GET", job + "/relationships/lists", lambda c: self._import_lists(c, ids_only=True), None),
            ("GET", "/api/profiles", self._profiles_get, None),
            ("GET", "/api/lists", self._lists_get, None),
            ("POST", "/api/lists", self._lists_create, None),
            ("GET", "/api/lists/{id}", self._list_get, None),
            ("GET", "/api/lists/{id}/profiles", lambda c: self._list_profiles(c, ids_only=False), None),
            ("GET", members, lambda c: self._list_profiles(c, ids_only=True), None),
            ("POST", members, lambda c: self._list_members(c, add=True), None),
            ("DELETE", members, lambda c: self._list_members(c, add=False), None),
            ("POST", UNSUBSCRIBE_PATH, self._unsubscribe, None),
            ("GET", "/api/metrics", self._metrics_get, None),
            ("GET", "/api/events", self._events_get, None),
        ]
        for method, path, handler, max_bytes in routes:
            self._serve(method, path, handler, max_bytes)

    # -- what the service holds -----------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        with self.lock:
            return {name: {i: asdict(v) for i, v in getattr(self, name).items()} for name in self.state_attributes}

    def import_state(self, state: dict[str, Any]) -> None:
        kinds: dict[str, Any] = {"profiles": Profile, "lists": KList, "metrics": Metric, "events": Event}
        with self.lock:
            for name, kind in kinds.items():
                if name in state:
                    setattr(self, name, {i: kind(**values) for i, values in state[name].items()})
            self._by_identifier = {key: {} for key in _IDENTIFIERS}
            for profile in self.profiles.values():
                for key in _IDENTIFIERS:
                    value = getattr(profile, key)
                    if value is not None:
                        self._by_identifier[key][value] = profile.id

    # -- seeding and inspection -----------------------------------------------------------------
    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _ulid(self) -> str:
        """A 26-character, time-ordered id like Klaviyo's profile and job ids."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms)
        self._sequence += 1
        value = (self._last_ms << 80) | self._sequence
        return "".join(_CROCKFORD_PAIRS[(value >> (10 * i)) & 1023] for i in reversed(range(13)))

    def _short_id(self, taken: Mapping[str, Any], length: int = 6) -> str:
        while True:
            candidate = "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(length))
            if candidate not in taken:
                return candidate

    def create_list(self, name: str, list_id: str | None = None, *, opt_in_process: str = "single_opt_in") -> str:
        with self.lock:
            list_id = list_id or self._short_id(self.lists)
            if list_id not in self.lists:
                now = self._now()
                self.lists[list_id] = KList(list_id, name, now, now, opt_in_process)
            return list_id

    def add_profile(
        self,
        email: str | None,
        consent: str = NEVER_SUBSCRIBED,
        *,
        phone_number: str | None = None,
        external_id: str | None = None,
        suppression: str | None = None,
        **attributes: Any,
    ) -> str:
        """Seed a profile (or update the one with that email) with an email-marketing consent state."""
        with self.lock:
            ids = {"email": normal_email(email), "phone_number": phone_number, "external_id": external_id}
            profile = self._find(ids) or self._new_profile()
            self._set_identifiers(profile, ids)
            profile.attributes.update(attributes)
            profile.consent = consent
            profile.consent_timestamp = self._now() if consent != NEVER_SUBSCRIBED else None
            if suppression is not None:
                profile.suppressions.append((suppression, self._now()))
            return profile.id

    def seed_profiles(self, emails: Iterable[str], consent: str = SUBSCRIBED) -> None:
        """Seed many profiles at once with one consent state: an account that already holds a shop's
        subscribers (as Klaviyo's own store integration would have recorded them)."""
        with self.lock:
            now = self._now()
            for email in emails:
                address = normal_email(email)
                if address is None:
                    continue
                existing = self._by_identifier["email"].get(address)
                profile = self.profiles[existing] if existing else self._new_profile()
                if not existing:
                    self._set_identifiers(profile, {"email": address})
                profile.consent = consent
                profile.consent_timestamp = now if consent != NEVER_SUBSCRIBED else None

    def delete_profile(self, email: str) -> str | None:
        """Delete the profile with that email (a data-privacy deletion, or a merge into another
        profile): its id stops existing and it leaves every list. Its id, or None."""
        with self.lock:
            profile_id = self._by_identifier["email"].get(str(normal_email(email)))
            if profile_id is None:
                return None
            profile = self.profiles.pop(profile_id)
            for name in _IDENTIFIERS:
                value = getattr(profile, name)
                if value is not None:
                    self._by_identifier[name].pop(value, None)
            for klist in self.lists.values():
                klist.members.pop(profile_id, None)
            self.events = {k: e for k, e in self.events.items() if e.profile_id != profile_id}
            return profile_id

    def add_to_list(self, list_id: str, email: str) -> None:
        with self.lock:
            profile_id = self._by_identifier["email"][str(normal_email(email))]
            self.lists[list_id].members.setdefault(profile_id, self._now())

    def list_members(self, list_id: str) -> set[str]:
        """The member emails of a list (profiles without an email show as their id)."""
        with self.lock:
            return {self.profiles[p].email or p for p in self.lists[list_id].members}

    def profile(self, email: str) -> Profile | None:
        """A copy of the profile with that email, or None."""
        with self.lock:
            profile_id = self._by_identifier["email"].get(str(normal_email(email)))
            return None if profile_id is None else deepcopy(self.profiles[profile_id])

    def metric_id(self, name: str) -> str:
        """The id of the metric with that name, created when new (like Klaviyo creates it on first event)."""
        with self.lock:
            found = next((m.id for m in self.metrics.values() if m.name == name), None)
            if found is None:
                found = self._short_id(self.metrics)
                self.metrics[found] = Metric(found, name, self._now())
            return found

    def record_event(self, email: str, metric_name: str, at: datetime, properties: dict[str, Any] | None = None) -> str:
        """An engagement event (e.g. "Opened Email") by the profile with ``email``, created if new."""
        with self.lock:
            profile_id = self._by_identifier["email"].get(str(normal_email(email))) or self.add_profile(email)
            event_id = self._short_id(self.events, 12)
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            self.events[event_id] = Event(
                event_id, self.metric_id(metric_name), profile_id, at, dict(properties or {}), str(uuid.uuid4())
            )
            return event_id

    @property
    def unsubscribe_calls(self) -> list[LoggedRequest]:
        """Every request that reached the unsubscribe job endpoint, whatever its answer: our connector sends none."""
        with self.lock:
            return [r for r in self.log if r.path.rstrip("/") == UNSUBSCRIBE_PATH]

    def finish_jobs(self) -> None:
        """Complete every pending import job now, whatever ``job_polls`` says."""
        with self.lock:
            for job in self.jobs.values():
                if job.status != "complete":
                    self._complete(job)

    # -- auth, revision, faults ------------------------------------------------------------------
    def authorised(self, request: Request) -> bool:
        return request.header("authorization") == f"Klaviyo-API-Key {self.api_key}"

    def unauthorised(self, request: Request) -> Response:
        scheme, _, key = (request.header("authorization") or "").partition(" ")
        if scheme != "Klaviyo-API-Key" or not key:
            title = "Authentication credentials were not provided."
            detail = "Missing or invalid authorization scheme. Please use Klaviyo-API-Key."
            return ApiError(401, "not_authenticated", title, detail).response()
        title = "Incorrect authentication credentials."
        return ApiError(401, "authentication_failed", title, title).response()

    def throttled(self, request: Request) -> Response:
        return throttled(self.storm_retry_after)

    def server_error(self, request: Request, status: int) -> Response:
        title = "A server error occurred." if status == 500 else "Service unavailable."
        return ApiError(status, "error", title, title).response()

    def dispatch(self, request: Request) -> Response | None:
        if len(request.path) > 1:
            request.path = request.path.rstrip("/")  # Klaviyo's own links end in "/"
        response = super().dispatch(request)
        harness_404 = response is not None and isinstance(response.body, dict) and "error" in response.body
        if response is not None and harness_404:
            if any(regex.match(request.path) for _, regex, _ in self.routes):
                detail = f"{request.method} is not allowed on {request.path} (or not emulated)."
                response = ApiError(405, "method_not_allowed", "Method not allowed.", detail).response()
            else:
                response = not_found(f"No resource at {request.path}.").response()
            self.record(request, response.status)
        return response

    def _check_revision(self, request: Request) -> None:
        revision = request.header("revision")
        if revision is None:
            raise invalid("The 'revision' header is required (format: YYYY-MM-DD[.suffix]).", parameter="revision")
        if not _REVISION_FORMAT.match(revision):
            raise invalid(f"Invalid revision '{revision}' (format: YYYY-MM-DD[.suffix]).", parameter="revision")
        if revision not in self.revisions:
            raise not_found("No valid revisions found for method")

    # -- the per-route pipeline ------------------------------------------------------------------
    def _serve(self, method: str, path: str, handler: Callable[[Call], Response], max_bytes: int | None) -> None:
        op = operation(method, path)

        def run(request: Request) -> Response:
            return self._run(op, handler, max_bytes, request)

        self.route(method, path, run)

    def _run(
        self, op: Operation, handler: Callable[[Call], Response], max_bytes: int | None, request: Request
    ) -> Response:
        call = Call(request, op, f"http://{request.header('host') or self.url.removeprefix('http://')}")
        rate: dict[str, str] = {}
        with self.lock:
            try:
                self._check_revision(request)
                if self.scopes is not None and not op.scopes <= self.scopes:
                    detail = "You do not have permission to perform this action."
                    raise ApiError(403, "permission_denied", detail, detail)
                taken = self._take(op, call)
                if isinstance(taken, int):
                    self.record(request, 429)
                    return throttled(taken)
                rate = taken
                if op.body_schema is not None:
                    call.body = self._body(call, op.body_schema, max_bytes)
                    call.items = _items(call.body)
                response = handler(call)
            except ApiError as error:
                response = error.response()
            self.record(request, response.status, call.items)
        response.headers.update(rate)
        return response

    def _take(self, op: Operation, call: Call) -> dict[str, str] | int:
        bucket, limits = op.op_id, op.limits
        if op.op_id == "get_list" and "profile_count" in call.listed("additional-fields[list]"):
            bucket, limits = "get_list:profile_count", Limits(1, 15)  # the endpoint's own documented limits
        taken = self.windows.take(bucket, self.limits or limits)
        if isinstance(taken, int) and not self.enforce_limits:
            return {}
        return taken

    def _body(self, call: Call, schema: str, max_bytes: int | None) -> Any:
        request = call.request
        if max_bytes is not None and len(request.body) > max_bytes:
            detail = f"The request payload exceeds the maximum allowed size of {max_bytes} bytes."
            raise ApiError(413, "request_too_large", "Request entity too large.", detail)
        media = (request.header("content-type") or "").split(";")[0].strip().lower()
        if media not in ("application/json", JSON_API):
            detail = f'Unsupported media type "{media}" in request.'
            raise ApiError(415, "unsupported_media_type", "Unsupported media type.", detail)
        try:
            body = request.json()
        except ValueError:
            raise ApiError(400, "parse_error", "Malformed data.", "JSON parse error.") from None
        self.bodies.append((request.method, request.path, body))
        if self.validate:
            errors = [
                error_object(
                    400,
                    "invalid",
                    "Invalid input.",
                    e.message,
                    pointer="/" + "/".join(str(p) for p in e.absolute_path),
                )
                for e in request_validator(schema).iter_errors(body)
            ]
            if errors:
                raise ApiError(400, "invalid", "Invalid input.", errors[0]["detail"], errors=errors)
        return body

    # -- paging, filtering, documents ------------------------------------------------------------
    def _conditions(self, call: Call) -> list[Condition]:
        raw = call.param("filter")
        return parse_filter(raw, call.op.filters) if raw else []

    def _sort(self, call: Call, default: str) -> tuple[str, bool]:
        sort = call.param("sort") or default
        if sort not in call.op.sorts and sort != default:
            raise invalid(f"'{sort}' is not a valid sort for this endpoint.", parameter="sort")
        return sort.removeprefix("-"), sort.startswith("-")

    def _page(
        self, call: Call, rows: list[T], key: Callable[[T], tuple[Any, ...]], descending: bool = False
    ) -> tuple[list[T], dict[str, str]]:
        """One page of ``rows`` after ``page[cursor]``: keyset paging, so every row shows exactly once."""
        size = METRICS_PAGE
        if call.op.page_size is not None:
            default, low, high = call.op.page_size
            raw = call.param("page[size]")
            try:
                size = default if raw is None else int(raw)
            except ValueError:
                raise invalid("page[size] must be an integer.", parameter="page[size]") from None
            if not low <= size <= high:
                raise invalid(f"page[size] must be between {low} and {high}.", parameter="page[size]")
        query = {k: v for k, v in call.request.query.items() if k != "page[cursor]"}
        signature = json.dumps([call.op.op_id, call.request.path, query], sort_keys=True)
        fingerprint = hashlib.sha256(signature.encode()).hexdigest()[:16]
        ordered = sorted(rows, key=key, reverse=descending)
        cursor = call.param("page[cursor]")
        if cursor:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
                if decoded["q"] != fingerprint:
                    raise ValueError("cursor of another query")
                after = tuple(decoded["k"])
            except (ValueError, KeyError, TypeError):
                raise invalid("Invalid cursor provided.", parameter="page[cursor]") from None
            ordered = [r for r in ordered if (key(r) < after if descending else key(r) > after)]
        page = ordered[:size]
        links = {"self": self._link(call, query)}
        if len(ordered) > size:
            token = json.dumps({"k": list(key(page[-1])), "q": fingerprint}).encode()
            links["next"] = self._link(call, {**query, "page[cursor]": [base64.urlsafe_b64encode(token).decode()]})
        return page, links

    def _link(self, call: Call, query: Mapping[str, list[str]]) -> str:
        encoded = urlencode([(k, v) for k, values in query.items() for v in values])
        return f"{call.base}{call.request.path}/" + (f"?{encoded}" if encoded else "")

    def _document(
        self, call: Call, data: Any, links: dict[str, str] | None = None, included: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A JSON:API document, with ``fields[<type>]`` sparse fieldsets applied."""
        document: dict[str, Any] = {"data": data}
        if included is not None:
            unique = {(r["type"], r["id"]): r for r in included}
            document["included"] = list(unique.values())
        document["links"] = links or {"self": self._link(call, call.request.query)}
        resources = (data if isinstance(data, list) else [data]) + document.get("included", [])
        for resource in resources:
            wanted = call.listed(f"fields[{resource.get('type')}]")
            if wanted and isinstance(resource.get("attributes"), dict):
                keep = {name.split(".")[0] for name in wanted}
                resource["attributes"] = {k: v for k, v in resource["attributes"].items() if k in keep}
        return document

    @staticmethod
    def _relationship(base: str, kind: str, ident: str, related: str) -> dict[str, str]:
        return {
            "self": f"{base}/api/{kind}/{ident}/relationships/{related}/",
            "related": f"{base}/api/{kind}/{ident}/{related}/",
        }

    def _profile_json(
        self, profile: Profile, base: str, *, subscriptions: bool = False, joined: datetime | None = None
    ) -> dict[str, Any]:
        extra = profile.attributes
        last_event = max((e.at for e in self.events.values() if e.profile_id == profile.id), default=None)
        attributes: dict[str, Any] = {
            "email": profile.email,
            "phone_number": profile.phone_number,
            "external_id": profile.external_id,
            **{k: extra.get(k) for k in ("first_name", "last_name", "organization", "locale", "title", "image")},
            "created": iso(profile.created),
            "updated": iso(profile.updated),
            "last_event_date": iso(last_event),
            "location": extra.get("location") or {},
            "properties": extra.get("properties") or {},
        }
        if joined is not None:
            attributes["joined_group_at"] = iso(joined)
        if subscriptions:
            attributes["subscriptions"] = {"email": {"marketing": self._marketing(profile)}}
        return {
            "type": "profile",
            "id": profile.id,
            "attributes": attributes,
            "relationships": {
                "lists": {"links": self._relationship(base, "profiles", profile.id, "lists")},
                "segments": {"links": self._relationship(base, "profiles", profile.id, "segments")},
            },
            "links": {"self": f"{base}/api/profiles/{profile.id}/"},
        }

    @staticmethod
    def _marketing(profile: Profile) -> dict[str, Any]:
        return {
            "can_receive_email_marketing": profile.can_receive_email_marketing,
            "consent": profile.consent,
            "consent_timestamp": iso(profile.consent_timestamp),
            "last_updated": iso(profile.consent_timestamp),
            "method": profile.consent_method,
            "method_detail": "",
            "custom_method_detail": None,
            "double_optin": None,
            "suppression": [{"reason": r, "timestamp": iso(t)} for r, t in profile.suppressions],
            "list_suppressions": [
                {"list_id": lid, "reason": r, "timestamp": iso(t)} for lid, r, t in profile.list_suppressions
            ],
        }

    def _list_json(self, klist: KList, base: str, *, profile_count: bool = False) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "name": klist.name,
            "created": iso(klist.created),
            "updated": iso(klist.updated),
            "opt_in_process": klist.opt_in_process,
        }
        if profile_count:
            attributes["profile_count"] = len(klist.members)
        return {
            "type": "list",
            "id": klist.id,
            "attributes": attributes,
            "relationships": {
                "profiles": {"links": self._relationship(base, "lists", klist.id, "profiles")},
                "tags": {"links": self._relationship(base, "lists", klist.id, "tags")},
            },
            "links": {"self": f"{base}/api/lists/{klist.id}/"},
        }

    def _job_json(self, job: ImportJob, base: str) -> dict[str, Any]:
        root = f"{base}/api/profile-bulk-import-jobs/{job.id}"
        return {
            "type": "profile-bulk-import-job",
            "id": job.id,
            "attributes": {
                "status": job.status,
                "created_at": iso(job.created_at),
                "total_count": len(job.rows),
                "completed_count": job.completed_count,
                "failed_count": job.failed_count,
                "completed_at": iso(job.completed_at),
                "expires_at": None,
                "started_at": iso(job.started_at),
            },
            "relationships": {
                "lists": {
                    "data": [{"type": "list", "id": i} for i in job.list_ids],
                    "links": self._relationship(base, "profile-bulk-import-jobs", job.id, "lists"),
                },
                "profiles": {"links": self._relationship(base, "profile-bulk-import-jobs", job.id, "profiles")},
                "import-errors": {"links": {"related": f"{root}/import-errors/"}},
            },
            "links": {"self": f"{root}/"},
        }

    def _metric_json(self, metric: Metric, base: str) -> dict[str, Any]:
        return {
            "type": "metric",
            "id": metric.id,
            "attributes": {
                "name": metric.name,
                "created": iso(metric.created),
                "updated": iso(metric.created),
                "integration": {"object": "integration", "name": "Klaviyo", "category": "Internal"},
            },
            "links": {"self": f"{base}/api/metrics/{metric.id}/"},
        }

    def _event_json(self, event: Event, base: str) -> dict[str, Any]:
        return {
            "type": "event",
            "id": event.id,
            "attributes": {
                "timestamp": int(event.at.timestamp()),
                "event_properties": event.properties,
                "datetime": event.at.astimezone(UTC).isoformat(timespec="seconds"),
                "uuid": event.uuid,
            },
            "relationships": {
                "profile": {
                    "data": {"type": "profile", "id": event.profile_id},
                    "links": self._relationship(base, "events", event.id, "profile"),
                },
                "metric": {
                    "data": {"type": "metric", "id": event.metric_id},
                    "links": self._relationship(base, "events", event.id, "metric"),
                },
            },
            "links": {"self": f"{base}/api/events/{event.id}/"},
        }

    # -- profiles --------------------------------------------------------------------------------
    def _new_profile(self) -> Profile:
        now = self._now()
        profile = Profile(self._ulid(), now, now)
        self.profiles[profile.id] = profile
        return profile

    def _find(self, identifiers: Mapping[str, Any]) -> Profile | None:
        for name in _IDENTIFIERS:
            value = identifiers.get(name)
            if value is not None and value in self._by_identifier[name]:
                return self.profiles[self._by_identifier[name][value]]
        return None

    def _set_identifiers(self, profile: Profile, identifiers: Mapping[str, Any]) -> None:
        for name in _IDENTIFIERS:
            value = identifiers.get(name)
            if value is None:
                continue
            old = getattr(profile, name)
            if old is not None:
                self._by_identifier[name].pop(old, None)
            setattr(profile, name, value)
            self._by_identifier[name][value] = profile.id

    def _list_or_404(self, list_id: str, pointer: str | None = None) -> KList:
        if list_id not in self.lists and self.auto_create:
            self.create_list(f"Sandbox list {list_id}", list_id)
        if list_id not in self.lists:
            raise not_found(f"A list with id {list_id} does not exist.", pointer=pointer)
        return self.lists[list_id]

    def _candidates(self, conditions: Sequence[Condition]) -> Iterable[Profile]:
        """The profiles an ``equals``/``any`` condition on an identifier can match, from the index;
        every profile otherwise. Only a shortcut: the conditions are still checked on each one."""
        for cond in conditions:
            if cond.op not in ("equals", "any") or cond.field not in (*_IDENTIFIERS, "id"):
                continue
            values = cond.value if cond.is_list else [cond.value]
            if cond.field == "id":
                return [self.profiles[v] for v in dict.fromkeys(values) if v in self.profiles]
            index = self._by_identifier[cond.field]
            return [self.profiles[index[v]] for v in dict.fromkeys(values) if v in index]
        return self.profiles.values()

    def _profiles_get(self, call: Call) -> Response:
        conditions = self._conditions(call)
        sort, descending = self._sort(call, "id")
        getters: dict[str, Callable[[Profile], Any]] = {
            "id": lambda p: p.id,
            "email": lambda p: p.email,
            "phone_number": lambda p: p.phone_number,
            "external_id": lambda p: p.external_id,
            "created": lambda p: p.created,
            "updated": lambda p: p.updated,
        }
        for cond in conditions:
            if cond.field not in getters:
                raise invalid(f"Filtering on '{cond.field}' is not supported by this emulator.", parameter="filter")
        rows = [p for p in self._candidates(conditions) if all(matches(c, getters[c.field](p)) for c in conditions)]
        sort_value = getters.get(sort, getters["id"])

        def key(p: Profile) -> tuple[Any, ...]:
            value = sort_value(p)
            return (iso(value) if isinstance(value, datetime) else value or "", p.id)

        page, links = self._page(call, rows, key, descending)
        subscriptions = "subscriptions" in call.listed("additional-fields[profile]")
        data = [self._profile_json(p, call.base, subscriptions=subscriptions) for p in page]
        return Response(200, self._document(call, data, links), content_type=JSON_API)

    # -- bulk import jobs ------------------------------------------------------------------------
    def _import_create(self, call: Call) -> Response:
        data = call.body["data"]
        rows = data["attributes"]["profiles"]["data"]
        if len(rows) > MAX_IMPORT_PROFILES:
            detail = f"A job may import at most {MAX_IMPORT_PROFILES} profiles; this one has {len(rows)}."
            raise invalid(detail, pointer="/data/attributes/profiles/data")
        list_ids = [ref["id"] for ref in (data.get("relationships") or {}).get("lists", {}).get("data", [])]
        for index, list_id in enumerate(list_ids):
            self._list_or_404(list_id, pointer=f"/data/relationships/lists/data/{index}/id")
        job = ImportJob(self._ulid(), self._now(), rows, list_ids)
        self.jobs[job.id] = job
        self._step(job)
        document = {
            "data": self._job_json(job, call.base),
            "links": {"self": f"{call.base}/api/profile-bulk-import-jobs/"},
        }
        return Response(202, document, content_type=JSON_API)

    def _job(self, call: Call) -> ImportJob:
        job_id = call.request.params.get("job_id") or call.request.params["id"]
        if job_id not in self.jobs:
            raise not_found(f"A profile bulk import job with id {job_id} does not exist.")
        return self.jobs[job_id]

    def _step(self, job: ImportJob) -> None:
        to_processing, to_complete = self.job_polls
        if job.status == "queued" and job.polls >= to_processing:
            job.status, job.started_at = "processing", self._now()
        if job.status == "processing" and job.polls >= to_complete:
            self._complete(job)

    def _complete(self, job: ImportJob) -> None:
        """Apply a job's rows: upsert each profile and add it to the job's lists; consent is never touched."""
        for index, row in enumerate(job.rows):
            outcome = self._import_row(row, index)
            if isinstance(outcome, dict):
                job.errors.append(outcome)
                continue
            for list_id in job.list_ids:
                self._list_or_404(list_id).members.setdefault(outcome.id, self._now())
            if outcome.id not in job.profile_ids:
                job.profile_ids.append(outcome.id)
        job.failed_count = len(job.errors)
        job.completed_count = len(job.rows) - job.failed_count
        job.status = "complete"
        job.started_at = job.started_at or self._now()
        job.completed_at = self._now()

    def _import_row(self, row: Any, index: int) -> Profile | dict[str, Any]:
        """The upserted profile, or the import-error resource explaining why the row was refused."""
        pointer = f"/data/attributes/profiles/data/{index}"

        def refused(detail: str, where: str = "") -> dict[str, Any]:
            attributes = {
                "code": "invalid",
                "title": "Invalid input.",
                "detail": detail,
                "source": {"pointer": pointer + where},
                "original_payload": row,
            }
            return {"type": "import-error", "id": str(uuid.uuid4()), "attributes": attributes}

        if len(json.dumps(row, separators=(",", ":")).encode()) > MAX_PROFILE_BYTES:
            return refused(f"The profile exceeds the maximum allowed size of {MAX_PROFILE_BYTES} bytes.")
        attrs = dict(row.get("attributes") or {})
        raw_email = attrs.get("email")
        if raw_email is not None and not _EMAIL.match(raw_email.strip()):
            return refused(f"Invalid email address: {raw_email!r}.", "/attributes/email")
        phone = attrs.get("phone_number")
        if phone is not None and not _E164.match(phone):
            return refused("Invalid phone number; use E.164 format.", "/attributes/phone_number")
        identifiers = {"email": normal_email(raw_email), "phone_number": phone, "external_id": attrs.get("external_id")}
        if row.get("id") is None and all(v is None for v in identifiers.values()):
            return refused(_LOOKUP_DETAIL, "/attributes")
        profile = self.profiles.get(row.get("id") or "") or self._find(identifiers)
        if row.get("id") is not None and profile is None:
            return refused(f"A profile with id {row['id']} does not exist.", "/id")
        for name in _IDENTIFIERS:
            value = identifiers[name]
            owner = None if value is None else self._by_identifier[name].get(value)
            if owner is not None and profile is not None and owner != profile.id:
                return refused(f"The {name} belongs to another profile.", f"/attributes/{name}")
        profile = profile or self._new_profile()
        self._set_identifiers(profile, identifiers)
        for name, value in attrs.items():
            if name in _IDENTIFIERS or name == "_kx" or value is None:
                continue  # a null never clears a field in a bulk import
            if name == "properties" and isinstance(value, dict):
                profile.attributes.setdefault("properties", {}).update(value)
            else:
                profile.attributes[name] = value
        profile.updated = self._now()
        return profile

    def _import_get(self, call: Call) -> Response:
        job = self._job(call)
        job.polls += 1
        self._step(job)
        included = None
        if "lists" in call.listed("include"):
            included = [self._list_json(self.lists[i], call.base) for i in job.list_ids if i in self.lists]
        return Response(
            200, self._document(call, self._job_json(job, call.base), included=included), content_type=JSON_API
        )

    def _import_errors(self, call: Call) -> Response:
        job = self._job(call)
        numbered = list(enumerate(job.errors))
        page, links = self._page(call, numbered, lambda pair: (pair[0],))
        return Response(200, self._document(call, [error for _, error in page], links), content_type=JSON_API)

    def _import_profiles(self, call: Call, *, ids_only: bool) -> Response:
        job = self._job(call)
        numbered = list(enumerate(job.profile_ids))
        page, links = self._page(call, numbered, lambda pair: (pair[0],))
        if ids_only:
            data = [{"type": "profile", "id": pid} for _, pid in page]
        else:
            subscriptions = "subscriptions" in call.listed("additional-fields[profile]")
            data = [self._profile_json(self.profiles[pid], call.base, subscriptions=subscriptions) for _, pid in page]
        return Response(200, self._document(call, data, links), content_type=JSON_API)

    def _import_lists(self, call: Call, *, ids_only: bool) -> Response:
        job = self._job(call)
        if ids_only:
            data = [{"type": "list", "id": i} for i in job.list_ids]
        else:
            data = [self._list_json(self.lists[i], call.base) for i in job.list_ids if i in self.lists]
        return Response(200, self._document(call, data), content_type=JSON_API)

    # -- lists ---------------------------------------------------------------------------------
    def _lists_get(self, call: Call) -> Response:
        conditions = self._conditions(call)
        sort, descending = self._sort(call, "id")
        getters: dict[str, Callable[[KList], Any]] = {
            "id": lambda lst: lst.id,
            "name": lambda lst: lst.name,
            "created": lambda lst: lst.created,
            "updated": lambda lst: lst.updated,
        }
        rows = [lst for lst in self.lists.values() if all(matches(c, getters[c.field](lst)) for c in conditions)]

        def key(lst: KList) -> tuple[Any, ...]:
            value = getters[sort](lst)
            return (iso(value) if isinstance(value, datetime) else value, lst.id)

        page, links = self._page(call, rows, key, descending)
        data = [self._list_json(lst, call.base) for lst in page]
        return Response(200, self._document(call, data, links), content_type=JSON_API)

    def _lists_create(self, call: Call) -> Response:
        attributes = call.body["data"]["attributes"]
        list_id = self.create_list(
            str(attributes["name"]), opt_in_process=attributes.get("opt_in_process") or "single_opt_in"
        )
        return Response(
            201, self._document(call, self._list_json(self.lists[list_id], call.base)), content_type=JSON_API
        )

    def _list_get(self, call: Call) -> Response:
        klist = self._list_or_404(call.request.params["id"])
        count = "profile_count" in call.listed("additional-fields[list]")
        return Response(
            200, self._document(call, self._list_json(klist, call.base, profile_count=count)), content_type=JSON_API
        )

    def _list_profiles(self, call: Call, *, ids_only: bool) -> Response:
        klist = self._list_or_404(call.request.params["id"])
        conditions = self._conditions(call)
        _, descending = self._sort(call, "joined_group_at")
        getters: dict[str, Callable[[str], Any]] = {
            "email": lambda pid: self.profiles[pid].email,
            "phone_number": lambda pid: self.profiles[pid].phone_number,
            "joined_group_at": lambda pid: klist.members[pid],
        }
        for cond in conditions:
            if cond.field not in getters:
                raise invalid(f"Filtering on '{cond.field}' is not supported by this emulator.", parameter="filter")
        rows = [pid for pid in klist.members if all(matches(c, getters[c.field](pid)) for c in conditions)]
        page, links = self._page(call, rows, lambda pid: (iso(klist.members[pid]), pid), descending)
        if ids_only:
            data = [{"type": "profile", "id": pid} for pid in page]
        else:
            subscriptions = "subscriptions" in call.listed("additional-fields[profile]")
            data = [
                self._profile_json(
                    self.profiles[pid], call.base, subscriptions=subscriptions, joined=klist.members[pid]
                )
                for pid in page
            ]
        return Response(200, self._document(call, data, links), content_type=JSON_API)

    def _list_members(self, call: Call, *, add: bool) -> Response:
        """Add or remove members by profile id: set-like (replays are no-ops), never a consent change."""
        refs = call.body["data"]
        if len(refs) > MAX_LIST_MEMBERS:
            detail = f"At most {MAX_LIST_MEMBERS} profiles may be sent per call; this one has {len(refs)}."
            raise invalid(detail, pointer="/data")
        klist = self._list_or_404(call.request.params["id"])
        for index, ref in enumerate(refs):
            if ref["id"] not in self.profiles:
                raise not_found(f"A profile with id {ref['id']} does not exist.", pointer=f"/data/{index}/id")
        now = self._now()
        for ref in refs:
            if add:
                klist.members.setdefault(ref["id"], now)
            else:
                klist.members.pop(ref["id"], None)
        return Response(204)

    # -- consent -------------------------------------------------------------------------------
    def _unsubscribe(self, call: Call) -> Response:
        """Klaviyo's semantics: members of the given list leave it; everyone else is unsubscribed globally."""
        data = call.body["data"]
        rows = data["attributes"]["profiles"]["data"]
        if len(rows) > MAX_UNSUBSCRIBE_PROFILES:
            detail = f"At most {MAX_UNSUBSCRIBE_PROFILES} profiles may be unsubscribed per call."
            raise invalid(detail, pointer="/data/attributes/profiles/data")
        ref = ((data.get("relationships") or {}).get("list") or {}).get("data")
        klist = self._list_or_404(ref["id"], pointer="/data/relationships/list/data/id") if ref else None
        self.unsubscribe_jobs.append(call.body)
        now = self._now()
        for row in rows:
            attrs = row["attributes"]
            if "marketing" not in (attrs["subscriptions"].get("email") or {}):
                continue  # only email marketing is modelled; the call is still recorded above
            identifiers = {"email": normal_email(attrs.get("email")), "phone_number": attrs.get("phone_number")}
            profile = self._find(identifiers)
            if profile is None:  # "a new profile will be created and then unsubscribed"
                profile = self._new_profile()
                self._set_identifiers(profile, identifiers)
            if klist is not None and profile.id in klist.members:
                del klist.members[profile.id]
                profile.list_suppressions.append((klist.id, "UNSUBSCRIBE", now))
            else:
                profile.consent, profile.consent_timestamp = UNSUBSCRIBED, now
                profile.suppressions.append(("UNSUBSCRIBE", now))
            profile.updated = now
        return Response(202)

    # -- engagement ------------------------------------------------------------------------------
    def _metrics_get(self, call: Call) -> Response:
        conditions = self._conditions(call)
        integration = {"integration.name": "Klaviyo", "integration.category": "Internal"}
        rows = [m for m in self.metrics.values() if all(matches(c, integration[c.field]) for c in conditions)]
        page, links = self._page(call, rows, lambda m: (m.id,))
        data = [self._metric_json(m, call.base) for m in page]
        return Response(200, self._document(call, data, links), content_type=JSON_API)

    def _events_get(self, call: Call) -> Response:
        conditions = self._conditions(call)
        sort, descending = self._sort(call, "datetime")
        getters: dict[str, Callable[[Event], Any]] = {
            "metric_id": lambda e: e.metric_id,
            "profile_id": lambda e: e.profile_id,
            "profile": lambda e: e.profile_id,
            "metric": lambda e: e.metric_id,
            "datetime": lambda e: e.at,
            "timestamp": lambda e: float(int(e.at.timestamp())),
        }
        rows = [e for e in self.events.values() if all(matches(c, getters[c.field](e)) for c in conditions)]

        def key(e: Event) -> tuple[Any, ...]:
            return (int(e.at.timestamp()), e.id) if sort == "timestamp" else (iso(e.at), e.id)

        page, links = self._page(call, rows, key, descending)
        include = call.listed("include")
        included: list[dict[str, Any]] = []
        if "profile" in include:
            included += [self._profile_json(self.profiles[e.profile_id], call.base) for e in page]
        if "metric" in include:
            included += [self._metric_json(self.metrics[e.metric_id], call.base) for e in page]
        data = [self._event_json(e, call.base) for e in page]
        document = self._document(call, data, links, included if include else None)
        return Response(200, document, content_type=JSON_API)


def sandbox_emulator(world: object = None) -> tuple[KlaviyoEmulator, str]:
    """For ``worker.sandbox``: the same ``/api`` paths, unknown list ids created on first use, and the
    sandbox shop's subscribed customers already subscribed profiles (as Klaviyo's Shopify integration
    would have them; without them our consent rule would keep everyone off every list)."""
    key = "pk_sandbox_local_emulator_key_000000"
    # import jobs complete at their first read: a sandbox batch waits one poll, not three
    emulator = KlaviyoEmulator(api_key=key, auto_create=True, job_polls=(0, 0))
    customers = getattr(getattr(world, "store", None), "customers", None) or []
    emulator.seed_profiles(
        str(address["emailAddress"])
        for customer in customers
        if (address := customer.get("defaultEmailAddress")) and address.get("marketingState") == SUBSCRIBED
    )
    return emulator, key
