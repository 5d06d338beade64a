"""A TikTok Business API emulator for custom audiences through the Segment API (CONTRACT.md, api-contracts.md §7).

Serves, under ``/open_api/v1.3``: ``POST segment/audience/`` (create, delete), ``POST segment/mapping/``
(add, delete), ``GET dmp/custom_audience/get/`` and ``list/``, ``POST dmp/custom_audience/delete/``.
Every answer is the TikTok envelope ``{code, message, request_id, data}`` with HTTP 200, ``code == 0``
meaning success; only the harness's 5xx storms, torn bodies and resets leave that shape. Bodies are
checked against ``connectors/tiktok/schemas.py``. An audience is a set of rows, each row the
``(id type, hash)`` pairs sent for one person; ``delete`` removes the identical row.

Codes follow the official SDK's ``tiktok_business/tiktok_code.py``; which code TikTok picks for each
``segment/mapping`` refusal is partly our assumption (see CONTRACT.md's error table, [U] marks):
40104/40105/40102 auth, 40001 advertiser not granted to the token, 40002 malformed body or unknown
audience, 40061 batch over ``MAX_MAPPING_ROWS``, 40062 an id that is not a lowercase hex hash,
40100 past the per-second quota (a fixed one-second window on the injectable ``clock``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.kernel.emulator import EmulatorServer, Faults, Request, Response
from connectors.tiktok.schemas import (
    AUDIENCE_SCHEMAS,
    CUSTOM_AUDIENCE_DELETE_SCHEMA,
    ID_TYPES,
    MAPPING_SCHEMA,
    MAX_AUDIENCE_NAME,
    MAX_MAPPING_ROWS,
)

OK = 0
PERMISSION_ERROR = 40001
PARAM_ERROR = 40002
INVALID_BATCH_SIZE = 40061
PII_NOT_HASHED = 40062
TOO_MANY_REQUESTS = 40100
ACCESS_TOKEN_EXPIRED = 40102
EMPTY_ACCESS_TOKEN = 40104
INVALID_ACCESS_TOKEN = 40105
SYSTEM_ERROR = 50000

#: TikTok's stated minimum for targeting a custom audience; below it ``is_valid`` is false (our reading)
MIN_TARGETABLE = 1000
#: the advertiser the sandbox token is granted; unknown audience ids are created for it on first use
SANDBOX_ADVERTISER_ID = "7000000000000000001"
DEFAULT_ADVERTISER_ID = "7000000000000000042"
PREFIX = "/open_api/v1.3"

Row = tuple[tuple[str, str], ...]
_HEX = re.compile(r"[0-9a-f]+")


@dataclass
class Audience:
    audience_id: str
    advertiser_id: str
    name: str
    id_type: str | None
    created: datetime
    rows: set[Row] = field(default_factory=set)


def envelope(code: int, message: str, request_id: str, data: Any = None) -> Response:
    return Response(200, {"code": code, "message": message, "request_id": request_id, "data": data or {}})


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class TikTokEmulator(EmulatorServer):
    """Start it, ``create_audience(advertiser, name)``, point the connector at ``emulator.base_url``."""

    name = "tiktok"
    state_attributes = ("audiences",)

    def __init__(
        self,
        access_token: str = "tiktok-test-token",  # noqa: S107 - an emulator's test credential
        faults: Faults | None = None,
        *,
        advertiser_ids: Iterable[str] = (DEFAULT_ADVERTISER_ID,),
        requests_per_second: int = 10,
        clock: Callable[[], float] = time.monotonic,
        max_rows: int = MAX_MAPPING_ROWS,
        prefix: str = PREFIX,
        auto_create: bool = False,
    ) -> None:
        super().__init__(faults)
        from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # dev dependency

        self._validators = {name: Draft202012Validator(s) for name, s in AUDIENCE_SCHEMAS.items()}
        self._mapping_validator = Draft202012Validator(MAPPING_SCHEMA)
        self._delete_validator = Draft202012Validator(CUSTOM_AUDIENCE_DELETE_SCHEMA)
        self.prefix = prefix
        #: token -> the advertiser ids it was authorised for
        self.tokens: dict[str, set[str]] = {access_token: set(advertiser_ids)}
        self.expired: set[str] = set()
        self.requests_per_second = requests_per_second
        self.clock = clock
        self.max_rows = max_rows
        #: sandbox only: unknown audience ids are created for ``SANDBOX_ADVERTISER_ID`` on first use
        self.auto_create = auto_create
        self.audiences: dict[str, Audience] = {}
        #: answer the next requests with these ``(code, message)`` envelopes instead
        self.inject: list[tuple[int, str]] = []
        #: (method, path, body) of each request that reached a handler; (path, code) of each answer
        self.bodies: list[tuple[str, str, Any]] = []
        self.codes: list[tuple[str, int]] = []
        self._ids = itertools.count(7_300_000_000_000_000_001)
        self._request_ids = itertools.count(1)
        self._window = -1
        self._used = 0
        p = self.prefix
        self.route("POST", p + "/segment/audience/", lambda r: self._handle(r, self._segment_audience))
        self.route("POST", p + "/segment/mapping/", lambda r: self._handle(r, self._mapping))
        self.route("GET", p + "/dmp/custom_audience/get/", lambda r: self._handle(r, self._get))
        self.route("GET", p + "/dmp/custom_audience/list/", lambda r: self._handle(r, self._list))
        self.route("POST", p + "/dmp/custom_audience/delete/", lambda r: self._handle(r, self._delete))

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    # -- what the service holds (the sandbox keeps it between commands) ----------------------
    def export_state(self) -> dict[str, Any]:
        with self.lock:
            return {"audiences": {i: asdict(a) for i, a in self.audiences.items()}}

    def import_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.audiences = {i: Audience(**a) for i, a in (state.get("audiences") or {}).items()}
            taken = [int(i) for i in self.audiences if i.isdigit()]
            self._ids = itertools.count(max([7_300_000_000_000_000_000, *taken]) + 1)

    # -- seeding and inspection ------------------------------------------------------------
    def create_audience(self, advertiser_id: str, name: str, id_type: str | None = None) -> str:
        with self.lock:
            audience_id = str(next(self._ids))
            self.audiences[audience_id] = Audience(audience_id, advertiser_id, name, id_type, datetime.now(UTC))
            return audience_id

    def audience(self, audience_id: str) -> set[Row]:
        """The rows of the audience, each a sorted tuple of ``(id type, hash)`` pairs."""
        with self.lock:
            return set(self.audiences[audience_id].rows)

    def identities(self, audience_id: str) -> set[str]:
        """Every hash in the audience, whatever row carried it."""
        return {value for row in self.audience(audience_id) for _, value in row}

    def seed(self, audience_id: str, rows: Iterable[Row]) -> None:
        with self.lock:
            self.audiences[audience_id].rows.update(rows)

    def grant(self, access_token: str, advertiser_id: str) -> None:
        with self.lock:
            self.tokens.setdefault(access_token, set()).add(advertiser_id)

    def expire(self, access_token: str) -> None:
        with self.lock:
            self.expired.add(access_token)

    # -- auth, throttling, faults ------------------------------------------------------------
    def _request_id(self) -> str:
        return f"{datetime.now(UTC):%Y%m%d%H%M%S}{next(self._request_ids):09X}"

    def authorised(self, request: Request) -> bool:
        token = request.header("access-token")
        with self.lock:
            return token in self.tokens and token not in self.expired

    def unauthorised(self, request: Request) -> Response:
        token = request.header("access-token")
        if not token:
            return envelope(EMPTY_ACCESS_TOKEN, "Access token is null, please check.", self._request_id())
        if token in self.expired:
            return envelope(ACCESS_TOKEN_EXPIRED, "Access token has expired.", self._request_id())
        return envelope(INVALID_ACCESS_TOKEN, "Access token is incorrect or has been revoked.", self._request_id())

    def throttled(self, request: Request) -> Response:
        return envelope(TOO_MANY_REQUESTS, "Too many requests. Please retry in some time.", self._request_id())

    def server_error(self, request: Request, status: int) -> Response:
        body = {"code": SYSTEM_ERROR, "message": "System error.", "request_id": self._request_id(), "data": {}}
        return Response(status, body)

    def _admit(self) -> bool:
        """One more request in this one-second window, unless the quota is spent (caller holds the lock)."""
        window = math.floor(self.clock())
        if window != self._window:
            self._window, self._used = window, 0
        if self._used >= self.requests_per_second:
            return False
        self._used += 1
        return True

    # -- dispatch ---------------------------------------------------------------------------
    def _handle(
        self, request: Request, handler: Callable[[Request, Any], tuple[int, str, Any, int | None]]
    ) -> Response:
        body: Any = None
        if request.method == "POST":
            try:
                body = request.json()
            except ValueError:
                body = None
        with self.lock:
            self.bodies.append((request.method, request.path, body))
            items: int | None = None
            if not self._admit():
                response = self.throttled(request)
            elif self.inject:
                code, message = self.inject.pop(0)
                response = envelope(code, message, self._request_id())
            else:
                code, message, data, items = handler(request, body)
                response = envelope(code, message, self._request_id(), data)
            self.codes.append((request.path, response.body["code"]))
            self.record(request, response.status, items)
            return response

    def _advertiser_denied(self, request: Request, advertiser_ids: Iterable[str]) -> str | None:
        allowed = self.tokens.get(request.header("access-token") or "", set())
        denied = sorted(set(advertiser_ids) - allowed)
        return f"No permission to operate advertiser {denied[0]}." if denied else None

    def _owned(self, audience_id: str, advertiser_ids: set[str]) -> Audience | None:
        if self.auto_create and audience_id not in self.audiences and SANDBOX_ADVERTISER_ID in advertiser_ids:
            now = datetime.now(UTC)
            self.audiences[audience_id] = Audience(audience_id, SANDBOX_ADVERTISER_ID, audience_id, None, now)
        audience = self.audiences.get(audience_id)
        return audience if audience is not None and audience.advertiser_id in advertiser_ids else None

    # -- handlers (called with the lock held) -----------------------------------------------
    def _segment_audience(self, request: Request, body: Any) -> tuple[int, str, Any, int | None]:
        action = body.get("action") if isinstance(body, dict) else None
        validator = self._validators.get(action) if isinstance(action, str) else None
        if validator is None:
            return PARAM_ERROR, "action: must be one of create, delete", None, None
        errors = list(validator.iter_errors(body))
        if errors:
            return PARAM_ERROR, _describe(errors[0]), None, None
        advertiser_id = body["advertiser_id"]
        if denied := self._advertiser_denied(request, [advertiser_id]):
            return PERMISSION_ERROR, denied, None, None
        if action == "create":
            name = body["custom_audience_name"]
            if len(name) > MAX_AUDIENCE_NAME:
                name = name[: MAX_AUDIENCE_NAME - 3] + "..."
            return OK, "OK", {"audience_id": self.create_audience(advertiser_id, name, body.get("id_type"))}, None
        if self._owned(body["audience_id"], {advertiser_id}) is None:
            return PARAM_ERROR, "Parameter error: invalid audience ID", None, None
        del self.audiences[body["audience_id"]]
        return OK, "OK", {}, None

    def _mapping(self, request: Request, body: Any) -> tuple[int, str, Any, int | None]:
        rows = body.get("batch_data") if isinstance(body, dict) else None
        items = len(rows) if isinstance(rows, list) else None
        errors = list(self._mapping_validator.iter_errors(body))
        shape = [e for e in errors if not _is_batch_size(e) and not _is_hash_format(e)]
        if shape:
            return PARAM_ERROR, _describe(shape[0]), None, items
        if denied := self._advertiser_denied(request, body["advertiser_ids"]):
            return PERMISSION_ERROR, denied, None, items
        assert isinstance(rows, list)
        if len(rows) > self.max_rows:
            return INVALID_BATCH_SIZE, f"batch_data: at most {self.max_rows} rows per request", None, items
        id_schema: list[str] = body["id_schema"]
        for n, row in enumerate(rows):
            if len(row) != len(id_schema):
                return PARAM_ERROR, f"batch_data[{n}]: {len(row)} entries, id_schema has {len(id_schema)}", None, items
            if not any(row):
                return PARAM_ERROR, f"batch_data[{n}]: no identifier", None, items
            for column, cell in zip(id_schema, row, strict=True):
                if cell and not (len(cell["id"]) == ID_TYPES[column] and _HEX.fullmatch(cell["id"])):
                    return (
                        PII_NOT_HASHED,
                        f"batch_data[{n}]: {column} id must be lowercase hex of its hash",
                        None,
                        items,
                    )
        advertisers = set(body["advertiser_ids"])
        wanted = {a for row in rows for cell in row for a in cell.get("audience_ids", [])}
        for audience_id in sorted(wanted):
            if self._owned(audience_id, advertisers) is None:
                return PARAM_ERROR, f"Parameter error: invalid audience ID {audience_id}", None, items
        for row in rows:
            for audience_id in wanted:
                pairs = tuple(
                    sorted(
                        (c, cell["id"])
                        for c, cell in zip(id_schema, row, strict=True)
                        if audience_id in cell.get("audience_ids", [])
                    )
                )
                if not pairs:
                    continue
                members = self.audiences[audience_id].rows
                if body["action"] == "add":
                    members.add(pairs)
                else:
                    members.discard(pairs)
        return OK, "OK", {}, items

    def _delete(self, request: Request, body: Any) -> tuple[int, str, Any, int | None]:
        errors = list(self._delete_validator.iter_errors(body))
        if errors:
            return PARAM_ERROR, _describe(errors[0]), None, None
        advertiser_id = body["advertiser_id"]
        if denied := self._advertiser_denied(request, [advertiser_id]):
            return PERMISSION_ERROR, denied, None, None
        if any(self._owned(i, {advertiser_id}) is None for i in body["custom_audience_ids"]):
            return PARAM_ERROR, "Parameter error: invalid audience ID", None, None
        for audience_id in body["custom_audience_ids"]:
            del self.audiences[audience_id]
        return OK, "OK", {}, None

    def _query_audience_ids(self, request: Request) -> list[str] | str:
        raw = request.query.get("custom_audience_ids", [""])[0]
        try:
            ids = json.loads(raw)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100 or not all(isinstance(i, str) for i in ids):
            return 'custom_audience_ids: a JSON array of 1 to 100 ids, e.g. ["123"]'
        return ids

    def _get(self, request: Request, body: Any) -> tuple[int, str, Any, int | None]:
        advertiser_id = request.query.get("advertiser_id", [""])[0]
        ids = self._query_audience_ids(request)
        if not advertiser_id:
            return PARAM_ERROR, "advertiser_id: required", None, None
        if isinstance(ids, str):
            return PARAM_ERROR, ids, None, None
        if denied := self._advertiser_denied(request, [advertiser_id]):
            return PERMISSION_ERROR, denied, None, None
        found = [self._owned(i, {advertiser_id}) for i in ids]
        if None in found:
            return PARAM_ERROR, "Parameter error: invalid audience ID", None, None
        listed = [{"audience_details": _details(a), "audience_history": _history(a)} for a in found if a is not None]
        return OK, "OK", {"list": listed}, None

    def _list(self, request: Request, body: Any) -> tuple[int, str, Any, int | None]:
        advertiser_id = request.query.get("advertiser_id", [""])[0]
        try:
            page = int(request.query.get("page", ["1"])[0])
            size = int(request.query.get("page_size", ["10"])[0])
        except ValueError:
            page = size = 0
        if not advertiser_id or page < 1 or not 1 <= size <= 100:
            return PARAM_ERROR, "advertiser_id required; page >= 1; page_size 1..100", None, None
        if denied := self._advertiser_denied(request, [advertiser_id]):
            return PERMISSION_ERROR, denied, None, None
        mine = [a for a in self.audiences.values() if a.advertiser_id == advertiser_id]
        chunk = mine[(page - 1) * size : page * size]
        info = {"page": page, "page_size": size, "total_number": len(mine), "total_page": math.ceil(len(mine) / size)}
        return OK, "OK", {"list": [_summary(a) for a in chunk], "page_info": info}, None


def _is_batch_size(error: Any) -> bool:
    return bool(error.validator == "maxItems" and list(error.path) == ["batch_data"])


def _is_hash_format(error: Any) -> bool:
    return bool(error.validator == "pattern" and list(error.path)[-1:] == ["id"])


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error.path) or "body"
    return f"{where}: {error.message}"


def _summary(audience: Audience) -> dict[str, Any]:
    """An entry of ``dmp/custom_audience/list/`` (field names from Segment's types.ts)."""
    size = len(audience.rows)
    return {
        "audience_id": audience.audience_id,
        "name": audience.name,
        "audience_type": "Partner",
        "cover_num": size,
        "is_valid": size >= MIN_TARGETABLE,
        "is_expiring": False,
        "shared": False,
        "calculate_type": audience.id_type or "MULTIPLE_TYPES",
        "create_time": _stamp(audience.created),
        "expired_time": _stamp(audience.created + timedelta(days=365)),
    }


def _details(audience: Audience) -> dict[str, Any]:
    """``audience_details`` of ``dmp/custom_audience/get/`` (as Segment's fixture shows it)."""
    summary = _summary(audience)
    del summary["audience_type"]
    return {
        **summary,
        "type": "Partner",
        "audience_sub_type": "NORMAL",
        "is_auto_refresh": False,
        "is_creator": True,
        "msg": None,
        "error_msg": None,
        "rule": '{"inclusions": null, "exclusions": null}',
    }


def _history(audience: Audience) -> list[dict[str, Any]]:
    created = _stamp(audience.created)
    return [{"opt_time": created, "action": "create", "msg": None, "editor": "open_api", "action_detail": "0"}]


def sandbox_emulator(world: object = None) -> tuple[TikTokEmulator, str]:
    """For ``worker.sandbox``: served at the root URL; audiences of ``SANDBOX_ADVERTISER_ID`` appear on first use."""
    token = "sandbox-tiktok-token"  # noqa: S105 - the local emulator's credential
    emulator = TikTokEmulator(token, advertiser_ids=(SANDBOX_ADVERTISER_ID,), prefix="", auto_create=True)
    return emulator, token
