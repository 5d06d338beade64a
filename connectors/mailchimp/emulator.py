"""A Mailchimp Marketing API v3 emulator: lists, member statuses and static segments in memory.

Behaves as api-contracts.md §3 documents: Basic auth with the API key as password, problem+json
errors, 500 members per batch, HTTP 200 with per-member ``errors[]``, 429 without Retry-After past
10 simultaneous connections, and optionally a bare 403 (no body). Request bodies are validated
against the OpenAPI description carried in ``connectors/mailchimp/spec`` (a missing file is an error).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from connectors.kernel.emulator import EmulatorServer, Faults, Request, Response
from connectors.kernel.identifiers import normalize_email
from connectors.kernel.specs import OpenApiSchemas
from connectors.mailchimp.destination import MAX_MEMBERS, subscriber_hash

SPEC = OpenApiSchemas("mailchimp", "marketing-3.0.55.UNOFFICIAL-openapi-generator.yaml.gz")

BATCH_SCHEMA = "Members_to_Subscribe_Unsubscribe_to_from_a_List_in_batch"
SEGMENT_MEMBERS_SCHEMA = "Members_to_add_remove_to_from_a_static_segment"
SEGMENT_CREATE_SCHEMA = "List_8"


def spec_errors(schema_name: str, body: Any) -> list[str]:
    """Violations of the named request schema (raises SpecMissing when the description is absent)."""
    return SPEC.errors(schema_name, body)


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    body = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
        **extra,
    }
    return Response(status, body, content_type="application/problem+json")


class MailchimpEmulator(EmulatorServer):
    """Start it, seed a list, point ``MailchimpConfig(base_url=emulator.base_url)`` at it."""

    name = "mailchimp"
    state_attributes = ("lists", "segments", "campaigns", "activity", "_next_segment")

    def __init__(
        self,
        api_key: str = "test-key-us1",
        faults: Faults | None = None,
        *,
        max_connections: int = 10,
        validate: bool = True,
        prefix: str = "/3.0",
        auto_create: bool = False,
    ) -> None:
        super().__init__(faults)
        self.api_key = api_key
        self.prefix = prefix
        #: create unknown lists on first use (the sandbox cannot know the list ids beforehand)
        self.auto_create = auto_create
        self.max_connections = max_connections
        self.validate = validate
        if validate:
            SPEC.validator(BATCH_SCHEMA)  # fails loudly, now, when the description is missing
        #: list id -> lower-cased email -> status
        self.lists: dict[str, dict[str, str]] = {}
        #: list id -> segment id -> (name, member emails)
        self.segments: dict[str, dict[int, tuple[str, set[str]]]] = {}
        #: (method, path, body) of every request that reached a handler, for contract checks
        self.bodies: list[tuple[str, str, Any]] = []
        #: answer this many next requests with a bare 403 (no body), as under heavy load
        self.bare_forbidden = 0
        self.peak_connections = 0
        self._inflight = 0
        self._next_segment = 1000
        p = self.prefix
        self.route("POST", p + "/lists/{list_id}", self._batch_subscribe)
        self.route("GET", p + "/lists/{list_id}/segments", self._list_segments)
        self.route("POST", p + "/lists/{list_id}/segments", self._create_segment)
        self.route("POST", p + "/lists/{list_id}/segments/{segment_id}", self._segment_members)
        self.route("GET", p + "/lists/{list_id}/members/{subscriber_hash}", self._get_member)
        self.route("GET", p + "/lists/{list_id}/segments/{segment_id}/members", self._segment_member_list)
        self.route("GET", p + "/reports", self._reports)
        self.route("GET", p + "/reports/{campaign_id}/email-activity", self._email_activity)
        #: campaign id -> (list id, send time); campaign id -> email -> [(action, timestamp)]
        self.campaigns: dict[str, tuple[str, datetime]] = {}
        self.activity: dict[str, dict[str, list[tuple[str, datetime]]]] = {}

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    # -- seeding and inspection ----------------------------------------------------
    def send_campaign(self, campaign_id: str, list_id: str, sent_at: datetime) -> None:
        with self.lock:
            self.campaigns[campaign_id] = (list_id, sent_at)
            self.activity.setdefault(campaign_id, {})

    def record_activity(self, campaign_id: str, email: str, action: str, at: datetime) -> None:
        """An open, click or bounce of a sent campaign, as the reports API lists it."""
        with self.lock:
            self.activity[campaign_id].setdefault(email.strip().lower(), []).append((action, at))

    def _page(self, request: Request) -> tuple[int, int] | Response:
        try:
            count = int(request.query.get("count", ["10"])[0])
            offset = int(request.query.get("offset", ["0"])[0])
        except ValueError:
            return problem(400, "Invalid Resource", "count and offset must be integers")
        if not 1 <= count <= 1000 or offset < 0:
            return problem(400, "Invalid Resource", "count must be 1..1000 and offset >= 0")
        return count, offset

    def _since(self, request: Request, name: str) -> datetime | Response | None:
        raw = request.query.get(name, [None])[0]
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return problem(400, "Invalid Resource", f"{name} must be an ISO 8601 time")
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def _paging(self, request: Request, since_name: str) -> tuple[int, int, datetime | None] | Response:
        """``count``/``offset`` and the named time filter, or the 400 the real API gives."""
        page = self._page(request)
        since = self._since(request, since_name)
        if isinstance(page, Response):
            return page
        if isinstance(since, Response):
            return since
        return page[0], page[1], since

    def _reports(self, request: Request) -> Response:
        paging = self._paging(request, "since_send_time")
        if isinstance(paging, Response):
            return paging
        count, offset, since = paging
        with self.lock:
            sent = sorted(
                (sent_at, cid, list_id)
                for cid, (list_id, sent_at) in self.campaigns.items()
                if since is None or sent_at >= since
            )
        reports = [
            {"id": cid, "list_id": list_id, "send_time": at.isoformat(), "type": "regular"}
            for at, cid, list_id in sent[offset : offset + count]
        ]
        self.record(request, 200)
        return Response(200, {"reports": reports, "total_items": len(sent)})

    def _email_activity(self, request: Request) -> Response:
        cid = request.params["campaign_id"]
        paging = self._paging(request, "since")
        if isinstance(paging, Response):
            return paging
        count, offset, since = paging
        with self.lock:
            if cid not in self.campaigns:
                return problem(404, "Resource Not Found", "The requested resource could not be found.")
            list_id = self.campaigns[cid][0]
            rows = []
            for email, events in sorted(self.activity[cid].items()):
                kept = [(a, t) for a, t in events if since is None or t > since]
                if kept:
                    rows.append((email, kept))
        emails = [
            {
                "campaign_id": cid,
                "list_id": list_id,
                "email_id": hashlib.md5(email.encode(), usedforsecurity=False).hexdigest(),
                "email_address": email,
                "activity": [{"action": a, "timestamp": t.isoformat()} for a, t in events],
            }
            for email, events in rows[offset : offset + count]
        ]
        self.record(request, 200)
        return Response(200, {"emails": emails, "campaign_id": cid, "total_items": len(rows)})

    def create_list(self, list_id: str) -> None:
        with self.lock:
            self.lists.setdefault(list_id, {})
            self.segments.setdefault(list_id, {})

    def add_member(self, list_id: str, email: str, status: str = "subscribed") -> None:
        """Seed a contact, e.g. one that unsubscribed (``status="unsubscribed"``) or bounced."""
        self.create_list(list_id)
        with self.lock:
            self.lists[list_id][email.strip().lower()] = status

    def create_segment(self, list_id: str, name: str, members: set[str] | None = None) -> int:
        self.create_list(list_id)
        with self.lock:
            self._next_segment += 1
            self.segments[list_id][self._next_segment] = (name, set(members or ()))
            return self._next_segment

    def segment_by_name(self, list_id: str, name: str) -> int | None:
        with self.lock:
            return next((i for i, (n, _) in self.segments.get(list_id, {}).items() if n == name), None)

    def segment_members(self, list_id: str, segment_id: int) -> set[str]:
        with self.lock:
            return set(self.segments[list_id][segment_id][1])

    def member_status(self, list_id: str, email: str) -> str | None:
        with self.lock:
            return self.lists.get(list_id, {}).get(email.strip().lower())

    # -- auth, throttling, errors ---------------------------------------------------
    def authorised(self, request: Request) -> bool:
        header = request.header("authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value == self.api_key
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded.partition(":")[2] == self.api_key

    def unauthorised(self, request: Request) -> Response:
        return problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        )

    def throttled(self, request: Request) -> Response:
        return problem(429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.")

    def server_error(self, request: Request, status: int) -> Response:
        return problem(status, "Internal Server Error", "An unexpected internal error has occurred.")

    def dispatch(self, request: Request) -> Response | None:
        with self.lock:
            if self.bare_forbidden > 0:
                self.bare_forbidden -= 1
                self.record(request, 403)
                return Response(403, raw=b"")
            self._inflight += 1
            self.peak_connections = max(self.peak_connections, self._inflight)
            over = self._inflight > self.max_connections
        try:
            if over:
                self.record(request, 429)
                return self.throttled(request)
            return super().dispatch(request)
        finally:
            with self.lock:
                self._inflight -= 1

    def _body(self, request: Request, schema: str) -> tuple[Any, Response | None]:
        try:
            body = request.json()
        except ValueError:
            return None, problem(400, "JSON Parse Error", "We encountered an unspecified JSON parsing error.")
        with self.lock:
            self.bodies.append((request.method, request.path, body))
        if self.validate:
            errors = spec_errors(schema, body)
            if errors:
                fields = [{"field": e.split(":")[0], "message": e} for e in errors]
                detail = "The resource submitted could not be validated."
                return body, problem(400, "Invalid Resource", detail, errors=fields)
        return body, None

    def route(self, method: str, pattern: str, handler: Any) -> None:
        def with_list(request: Request) -> Response:
            if self.auto_create and "list_id" in request.params:
                self.create_list(request.params["list_id"])
            response: Response = handler(request)
            return response

        super().route(method, pattern, with_list)

    def _list(self, request: Request) -> dict[str, str] | None:
        return self.lists.get(request.params["list_id"])

    @staticmethod
    def _member_json(list_id: str, email: str, status: str) -> dict[str, Any]:
        return {
            "id": subscriber_hash(email),
            "email_address": email,
            "status": status,
            "list_id": list_id,
        }

    # -- handlers ---------------------------------------------------------------------
    def _batch_subscribe(self, request: Request) -> Response:
        list_id = request.params["list_id"]
        body, error = self._body(request, BATCH_SCHEMA)
        members = body.get("members") if isinstance(body, dict) else None
        items = len(members) if isinstance(members, list) else None
        if error is not None:
            self.record(request, error.status, items)
            return error
        assert isinstance(members, list)
        if items is not None and items > MAX_MEMBERS:
            self.record(request, 400, items)
            detail = f"You may only add or update up to {MAX_MEMBERS} members per request."
            return problem(400, "Invalid Resource", detail)
        with self.lock:
            emails = self._list(request)
            if emails is None:
                self.record(request, 404, items)
                return problem(404, "Resource Not Found", "The requested resource could not be found.")
            update_existing = bool(body.get("update_existing", False))
            new: list[dict[str, Any]] = []
            updated: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for item in members:
                raw = str(item.get("email_address", ""))
                outcome = self._upsert(list_id, emails, raw, item, update_existing)
                if isinstance(outcome, str):
                    code = "ERROR_CONTACT_EXISTS" if "already a list member" in outcome else "ERROR_GENERIC"
                    errors.append(
                        {"email_address": raw, "error": outcome, "error_code": code, "field": "", "field_message": ""}
                    )
                else:
                    (new if outcome[0] else updated).append(outcome[1])
            self.record(request, 200, items)
        answer = {
            "new_members": new,
            "updated_members": updated,
            "errors": errors,
            "total_created": len(new),
            "total_updated": len(updated),
            "error_count": len(errors),
        }
        return Response(200, answer)

    def _upsert(
        self, list_id: str, emails: dict[str, str], raw: str, item: dict[str, Any], update_existing: bool
    ) -> str | tuple[bool, dict[str, Any]]:
        """A member's error text, or (created?, member json)."""
        email = normalize_email(raw)
        if email is None or email.endswith(".invalid"):
            return f"{raw} looks fake or invalid, please enter a real email address."
        status, status_if_new = item.get("status"), item.get("status_if_new")
        current = emails.get(email)
        if current is None:
            new_status = status or status_if_new
            if new_status is None:
                return "Status is required for new contacts."
            emails[email] = str(new_status)
            return True, self._member_json(list_id, email, emails[email])
        if not update_existing:
            return f"{raw} is already a list member. Use PUT to insert or update list members."
        if status and status != current:
            if status in ("subscribed", "pending") and current in ("unsubscribed", "cleaned"):
                return (
                    f"{raw} is in a compliance state due to unsubscribe, bounce, or compliance review "
                    "and cannot be subscribed."
                )
            emails[email] = str(status)
        return False, self._member_json(list_id, email, emails[email])

    def _list_segments(self, request: Request) -> Response:
        list_id = request.params["list_id"]
        with self.lock:
            if list_id not in self.lists:
                self.record(request, 404)
                return problem(404, "Resource Not Found", "The requested resource could not be found.")
            kind = (request.query.get("type") or ["static"])[0]
            count = min(1000, int((request.query.get("count") or ["10"])[0]))
            offset = int((request.query.get("offset") or ["0"])[0])
            everything = [
                {"id": i, "name": n, "member_count": len(m), "type": "static", "list_id": list_id}
                for i, (n, m) in sorted(self.segments[list_id].items())
            ]
            if kind != "static":
                everything = []
            self.record(request, 200)
        page = everything[offset : offset + count]
        return Response(200, {"segments": page, "list_id": list_id, "total_items": len(everything)})

    def _create_segment(self, request: Request) -> Response:
        list_id = request.params["list_id"]
        body, error = self._body(request, SEGMENT_CREATE_SCHEMA)
        if error is not None:
            self.record(request, error.status)
            return error
        if list_id not in self.lists:
            self.record(request, 404)
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        emails = {str(e).strip().lower() for e in body.get("static_segment") or []}
        with self.lock:
            present = {e for e in emails if e in self.lists[list_id]}
        segment = self.create_segment(list_id, str(body["name"]), present)
        self.record(request, 200, len(emails))
        answer = {"id": segment, "name": body["name"], "member_count": len(present), "type": "static"}
        return Response(200, {**answer, "list_id": list_id})

    def _segment_members(self, request: Request) -> Response:
        list_id = request.params["list_id"]
        body, error = self._body(request, SEGMENT_MEMBERS_SCHEMA)
        to_add = [str(e) for e in body.get("members_to_add") or []] if isinstance(body, dict) else []
        to_remove = [str(e) for e in body.get("members_to_remove") or []] if isinstance(body, dict) else []
        items = max(len(to_add), len(to_remove))
        if error is not None:
            self.record(request, error.status, items)
            return error
        if items > MAX_MEMBERS:
            self.record(request, 400, items)
            return problem(400, "Invalid Resource", f"A maximum of {MAX_MEMBERS} members can be sent.")
        with self.lock:
            segment = self.segments.get(list_id, {}).get(int(request.params["segment_id"]))
            if segment is None:
                self.record(request, 404, items)
                return problem(404, "Resource Not Found", "The requested resource could not be found.")
            members, emails = segment[1], self.lists[list_id]
            added: list[dict[str, Any]] = []
            removed: list[dict[str, Any]] = []
            missing: list[str] = []
            for raw in to_add:
                email = raw.strip().lower()
                if email not in emails:
                    missing.append(raw)
                    continue
                if email not in members:
                    members.add(email)
                    added.append(self._member_json(list_id, email, emails[email]))
            for raw in to_remove:
                email = raw.strip().lower()
                if email in members:
                    members.discard(email)
                    removed.append(self._member_json(list_id, email, emails.get(email, "subscribed")))
            self.record(request, 200, items)
        errors = [{"email_addresses": missing, "error": "Email addresses are not on this list"}] if missing else []
        answer = {
            "members_added": added,
            "members_removed": removed,
            "errors": errors,
            "total_added": len(added),
            "total_removed": len(removed),
            "error_count": len(missing),
        }
        return Response(200, answer)

    def _segment_member_list(self, request: Request) -> Response:
        """A segment's members, ``count`` (at most 1000, default 10) from ``offset``, as the API pages."""
        list_id = request.params["list_id"]
        with self.lock:
            segment = self.segments.get(list_id, {}).get(int(request.params["segment_id"]))
            if segment is None:
                self.record(request, 404)
                return problem(404, "Resource Not Found", "The requested resource could not be found.")
            emails = self.lists[list_id]
            everyone = [self._member_json(list_id, e, emails.get(e, "subscribed")) for e in sorted(segment[1])]
            self.record(request, 200)
        count = min(1000, int((request.query.get("count") or ["10"])[0]))
        offset = int((request.query.get("offset") or ["0"])[0])
        return Response(200, {"members": everyone[offset : offset + count], "total_items": len(everyone)})

    def _get_member(self, request: Request) -> Response:
        list_id, wanted = request.params["list_id"], request.params["subscriber_hash"]
        with self.lock:
            found = next(
                (e for e in self.lists.get(list_id, {}) if subscriber_hash(e) == wanted),
                None,
            )
            if found is None:
                self.record(request, 404)
                return problem(404, "Resource Not Found", "The requested resource could not be found.")
            self.record(request, 200)
            return Response(200, self._member_json(list_id, found, self.lists[list_id][found]))


def sandbox_emulator(world: object = None) -> tuple[MailchimpEmulator, str]:
    """For ``worker.sandbox``: served at the root URL, lists created on first use."""
    key = "sandbox-key-us1"
    return MailchimpEmulator(api_key=key, prefix="", auto_create=True), key
