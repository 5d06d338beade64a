"""A Meta Marketing API emulator for customer-file custom audiences (api-contracts.md §6).

Audiences are sets of rows, each row the ``(key, hashed value)`` pairs sent for one person.
Errors are Graph error objects (HTTP 400 with ``code``); throttling answers code 17/80003 with an
``X-Business-Use-Case-Usage`` header; values that are not 64-hex SHA-256 count as invalid entries;
``usersreplace`` swaps the audience only when the final batch (``last_batch_flag``) arrives.

Assumption of ours, not Meta documentation: Meta may refuse a removal (reported for very small
audiences). ``refuse_removes`` injects such a refusal as a code-100 error on DELETE.
"""

from __future__ import annotations

import json
import re
from typing import Any

from connectors.kernel.emulator import EmulatorServer, Faults, Request, Response
from connectors.meta.destination import KEYS, MAX_ROWS

AudienceRow = tuple[tuple[str, str], ...]
_HEX = re.compile(r"^[0-9a-f]{64}$")
SINGLE_KEY = {"EMAIL_SHA256": "EMAIL", "PHONE_SHA256": "PHONE"}
MAX_SAMPLES = 10


def graph_error(
    code: int, message: str, *, subcode: int | None = None, status: int = 400, headers: dict[str, str] | None = None
) -> Response:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Aemu"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return Response(status, {"error": error}, headers=headers or {})


class MetaEmulator(EmulatorServer):
    """Start it, ``create_audience(id)``, point ``MetaConfig(base_url=emulator.base_url)`` at it."""

    name = "meta"
    state_attributes = ("audiences",)

    def __init__(
        self,
        access_token: str = "meta-test-token",  # noqa: S107 - an emulator's test credential
        faults: Faults | None = None,
        *,
        throttle_code: int = 80003,
        regain_minutes: int = 0,
        prefix: str = "/v25.0",
        auto_create: bool = False,
    ) -> None:
        super().__init__(faults)
        self.prefix = prefix
        #: create unknown audiences on first use (the sandbox cannot know the ids beforehand)
        self.auto_create = auto_create
        self.access_token = access_token
        self.throttle_code = throttle_code
        self.regain_minutes = regain_minutes
        self.audiences: dict[str, set[AudienceRow]] = {}
        #: audiences flagged (operation_status 471): writes fail with 100/1713230
        self.blocked: set[str] = set()
        #: hashed values Meta will count as invalid (to exercise partial failure)
        self.poisoned: set[str] = set()
        #: our assumption: Meta refuses removals (e.g. small audiences); see the module doc
        self.refuse_removes = False
        #: answer the next N requests with this Graph error ``(code, subcode)``
        self.inject: list[tuple[int, int | None]] = []
        self.bodies: list[tuple[str, str, Any]] = []
        self.token_in_url = 0
        self.replaces_completed = 0
        self._sessions: dict[tuple[str, int], set[AudienceRow]] = {}
        self._finished: set[tuple[str, int]] = set()
        p = self.prefix
        self.route("POST", p + "/{audience_id}/users", lambda r: self._users(r, "add"))
        self.route("DELETE", p + "/{audience_id}/users", lambda r: self._users(r, "remove"))
        self.route("POST", p + "/{audience_id}/usersreplace", lambda r: self._users(r, "replace"))

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    # -- seeding and inspection -------------------------------------------------------
    def create_audience(self, audience_id: str) -> None:
        with self.lock:
            self.audiences.setdefault(audience_id, set())

    def audience(self, audience_id: str) -> set[AudienceRow]:
        with self.lock:
            return set(self.audiences[audience_id])

    # -- auth, throttling, errors --------------------------------------------------------
    def authorised(self, request: Request) -> bool:
        if "access_token" in request.query:
            with self.lock:
                self.token_in_url += 1
            return request.query["access_token"][0] == self.access_token
        return request.header("authorization") == f"Bearer {self.access_token}"

    def unauthorised(self, request: Request) -> Response:
        return graph_error(190, "Invalid OAuth access token - Cannot parse access token")

    def throttled(self, request: Request) -> Response:
        usage = {
            "1234567890": [
                {
                    "type": "custom_audience",
                    "call_count": 100,
                    "total_cputime": 12,
                    "total_time": 30,
                    "estimated_time_to_regain_access": self.regain_minutes,
                }
            ]
        }
        messages = {17: "User request limit reached", 613: "Calls to this api have exceeded the rate limit."}
        message = messages.get(self.throttle_code, "There have been too many calls for this ad-account.")
        subcode = 2446079 if self.throttle_code == 17 else None
        headers = {"X-Business-Use-Case-Usage": json.dumps(usage)}
        return graph_error(self.throttle_code, message, subcode=subcode, headers=headers)

    def server_error(self, request: Request, status: int) -> Response:
        return graph_error(2, "An unexpected error has occurred. Please retry your request later.", status=status)

    # -- handlers -----------------------------------------------------------------------
    def _parse(self, body: Any) -> tuple[list[str], list[list[Any]]] | str:
        payload = body.get("payload") if isinstance(body, dict) else None
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                return "(#100) param payload must be a JSON object"
        if not isinstance(payload, dict):
            return "(#100) The parameter payload is required"
        schema, data = payload.get("schema"), payload.get("data")
        if not isinstance(data, list):
            return "(#100) payload.data must be an array"
        if isinstance(schema, str) and schema in SINGLE_KEY:
            return [SINGLE_KEY[schema]], [[v] for v in data]
        if not isinstance(schema, list) or not schema or any(k not in KEYS for k in schema):
            return "(#100) Invalid schema"
        if any(not isinstance(row, list) or len(row) != len(schema) for row in data):
            return "(#100) Number of columns in data does not match the schema"
        return [str(k) for k in schema], data

    def _users(self, request: Request, op: str) -> Response:
        audience_id = request.params["audience_id"]
        try:
            body = request.json()
        except ValueError:
            body = None
        with self.lock:
            self.bodies.append((request.method, request.path, body))
            parsed = self._parse(body)
            items = len(parsed[1]) if isinstance(parsed, tuple) else None
            response = self._apply(audience_id, op, body, parsed)
            self.record(request, response.status, items)
            return response

    def _apply(self, audience_id: str, op: str, body: Any, parsed: tuple[list[str], list[list[Any]]] | str) -> Response:
        if self.inject:
            code, subcode = self.inject.pop(0)
            return graph_error(code, f"(#{code}) injected error", subcode=subcode)
        if self.auto_create:
            self.audiences.setdefault(audience_id, set())
        if audience_id in self.blocked:
            return graph_error(100, "Audience Upload Blocked", subcode=1713230)
        if audience_id not in self.audiences:
            msg = f"Unsupported request. Object with ID '{audience_id}' does not exist or lacks permissions"
            return graph_error(100, msg, subcode=33)
        if isinstance(parsed, str):
            return graph_error(100, parsed)
        schema, data = parsed
        if len(data) > MAX_ROWS:
            return graph_error(100, f"(#100) Too many users in one request: the maximum is {MAX_ROWS}")
        if op == "remove" and self.refuse_removes:
            return graph_error(100, "(#100) Users cannot be removed from this audience")
        rows: set[AudienceRow] = set()
        samples: dict[str, str] = {}
        invalid = 0
        for values in data:
            cells = [str(v) for v in values]
            bad = [v for v in cells if v and (not _HEX.match(v) or v in self.poisoned)]
            if bad or not any(cells):
                invalid += 1
                if bad and len(samples) < MAX_SAMPLES:
                    samples[bad[0]] = "Invalid format or unmatchable value"
                continue
            rows.add(tuple(zip(schema, cells, strict=True)))
        session = body.get("session") if isinstance(body, dict) else None
        session_id = 0
        if op == "replace":
            if not isinstance(session, dict) or "session_id" not in session:
                return graph_error(100, "(#100) usersreplace requires a session")
            session_id = int(session["session_id"])
            key = (audience_id, session_id)
            if key not in self._finished:  # a replayed batch of a finished session changes nothing
                pending = self._sessions.setdefault(key, set())
                pending |= rows
                if session.get("last_batch_flag"):
                    self.audiences[audience_id] = pending
                    del self._sessions[key]
                    self._finished.add(key)
                    self.replaces_completed += 1
        elif op == "add":
            self.audiences[audience_id] |= rows
        else:
            self.audiences[audience_id] -= rows
        answer = {
            "audience_id": audience_id,
            "session_id": str(session_id or (session or {}).get("session_id", 0)),
            "num_received": len(data),
            "num_invalid_entries": invalid,
            "invalid_entry_samples": samples,
        }
        return Response(200, answer)


def sandbox_emulator(world: object = None) -> tuple[MetaEmulator, str]:
    """For ``worker.sandbox``: served at the root URL, audiences created on first use."""
    token = "sandbox-meta-token"  # noqa: S105 - the local emulator's credential
    return MetaEmulator(access_token=token, prefix="", auto_create=True), token
