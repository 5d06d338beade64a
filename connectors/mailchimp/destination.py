"""Mailchimp Marketing API v3: an email list, membership kept as a static segment (or tag).

Adds upsert the contacts first (batch subscribe/update, ``status_if_new`` only, so an unsubscribed
or cleaned contact is never re-subscribed), then add them to the segment; removes take them out of
the segment without touching the contact. api-contracts.md §3.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, model_validator

from connectors.kernel.destination import (
    BatchResult,
    Destination,
    DestinationConfig,
    MappingOptions,
    Rejection,
    chunks,
)
from connectors.kernel.errors import RetryableError
from connectors.kernel.identifiers import normalize_email
from connectors.kernel.paginate import OffsetPaginator, pages
from connectors.kernel.records import Consent, Member
from connectors.kernel.redact import redact
from connectors.mailchimp.client import MailchimpClient, data_centre

#: both batch endpoints take at most 500 members per call (spec description text, no maxItems)
MAX_MEMBERS = 500
#: contacts in these states are never re-subscribed by us: a person must opt in again
REFUSED_STATUSES = frozenset({"unsubscribed", "cleaned", "archived"})
_ABSENT = re.compile(r"(?i)\bnot\b.*\b(member|found|in|on|exist|present|subscribed)\b")
_ALREADY = re.compile(r"(?i)\balready\b")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 hex of the trimmed, lower-cased address."""
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


class MailchimpConfig(DestinationConfig):
    type: Literal["mailchimp"] = "mailchimp"
    #: ``{dc}`` is replaced by the API key's data centre; point it at an emulator in tests
    base_url: str = "https://{dc}.api.mailchimp.com/3.0"
    #: simultaneous connections per API key (Mailchimp allows 10; 8 leaves room for people)
    max_connections: int = Field(default=8, ge=1, le=10)


class MailchimpOptions(MappingOptions):
    """Exactly one of ``tag`` (a static segment found or created by name) or ``segment_id``."""

    tag: str | None = None
    segment_id: int | None = None

    @model_validator(mode="after")
    def _one_target(self) -> MailchimpOptions:
        if (self.tag is None) == (self.segment_id is None):
            raise ValueError("give exactly one of 'tag' or 'segment_id'")
        return self


class MailchimpDestination(Destination):
    kind = "mailchimp"
    audience_kind = "email"
    batch_size = MAX_MEMBERS
    readable = True
    Config = MailchimpConfig
    Options = MailchimpOptions

    def __init__(self, name: str, config: DestinationConfig, runtime: Any) -> None:
        super().__init__(name, config, runtime)
        assert isinstance(config, MailchimpConfig)
        self.mc_config = config
        self._lock = threading.Lock()

    def build_client(self) -> MailchimpClient:
        key = self.credential()
        base = self.mc_config.base_url
        if "{dc}" in base:
            base = base.replace("{dc}", data_centre(key))
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
        return MailchimpClient(
            base,
            auth=httpx.BasicAuth("audience-sync", key),
            retry=self.runtime.retry_policy(),
            concurrency=self.runtime.concurrency(f"mailchimp:{fingerprint}", self.mc_config.max_connections),
        )

    def identity(self, member: Member, options: MappingOptions) -> str:
        raw = member.email or ""
        return normalize_email(raw) or raw.strip().lower()

    def prepare(self, audience: str, options: MappingOptions) -> None:
        self.segment_id(audience, options)

    def segment_id(self, list_id: str, options: MappingOptions) -> int:
        """The static segment to keep: given, remembered for the mapping, or found (then created) by tag.

        Creation must never make a second segment of the same name: an unclear answer to the POST
        (a torn body, a timeout after Mailchimp applied it) is followed by a fresh look-up, not a
        blind retry; if two exist anyway, the one holding more members is ours. The choice is
        remembered for the mapping, so later runs never pick an empty twin.
        """
        opts = self.opts(options, MailchimpOptions)
        if opts.segment_id is not None:
            return opts.segment_id
        assert opts.tag is not None
        key = f"segment:{list_id}:{opts.tag}"
        with self._lock:
            remembered = self.memory.get(key)
            if remembered is not None:
                return int(remembered)
            found = self._find_segment(list_id, opts.tag)
            if found is None:
                found = self._create_segment(list_id, opts.tag)
            self.memory.set(key, found)
            return found

    def _create_segment(self, list_id: str, name: str) -> int:
        body = {"name": name, "static_segment": []}
        path = f"/lists/{quote(list_id)}/segments"
        for _ in range(self.runtime.retry_attempts):
            try:
                created = self.client.send_json_once("POST", path, json=body)
                return int(created["id"])
            except RetryableError:
                # Mailchimp may have created it even though we saw no answer: look before trying again
                again = self._find_segment(list_id, name)
                if again is not None:
                    return again
        created = self.client.send_json("POST", path, json=body)
        return int(created["id"])

    def _find_segment(self, list_id: str, name: str) -> int | None:
        """The static segment named ``name``; of several with that name, the one with most members."""
        paginator = OffsetPaginator(items="segments")
        matches = [
            (int(seg.get("member_count") or 0), int(seg["id"]))
            for body, _ in pages(self.client, f"/lists/{quote(list_id)}/segments", paginator, {"type": "static"})
            for seg in body.get("segments") or []
            if seg.get("name") == name
        ]
        # most members first; of equals, the oldest (lowest id)
        return sorted(matches, key=lambda m: (-m[0], m[1]))[0][1] if matches else None

    def members(self, audience: str, options: MappingOptions) -> set[str]:
        """The segment's members, read back (``reconcile``)."""
        path = f"/lists/{quote(audience)}/segments/{self.segment_id(audience, options)}/members"
        return {
            str(m.get("email_address", "")).strip().lower()
            for body, _ in pages(self.client, path, OffsetPaginator(items="members"))
            for m in body.get("members") or []
        }

    # -- response interpretation ------------------------------------------------------
    def _upsert_refusals(self, body: dict[str, Any]) -> dict[str, Rejection]:
        """Per-member errors and contacts Mailchimp holds as unsubscribed/cleaned."""
        refused: dict[str, Rejection] = {}
        for error in body.get("errors") or []:
            email = str(error.get("email_address", "")).strip().lower()
            text = redact(str(error.get("error", "")))[:300]
            code = str(error.get("error_code") or "mailchimp_error")
            if "compliance" in text.lower():
                code = "compliance_state"
            refused[email] = Rejection(email, f"Mailchimp refused the contact: {text}", code)
        for member in [*(body.get("new_members") or []), *(body.get("updated_members") or [])]:
            status = str(member.get("status", ""))
            if status in REFUSED_STATUSES:
                email = str(member.get("email_address", "")).strip().lower()
                reason = f"contact is {status} in Mailchimp; not re-subscribed without a new opt-in"
                refused[email] = Rejection(email, reason, f"mailchimp_{status}")
        return refused

    @staticmethod
    def _segment_refusals(body: dict[str, Any], *, removing: bool) -> dict[str, Rejection]:
        refused: dict[str, Rejection] = {}
        for error in body.get("errors") or []:
            text = redact(str(error.get("error", "")))[:300]
            harmless = _ABSENT.search(text) if removing else _ALREADY.search(text)
            if harmless:
                continue  # already in the desired state
            for raw in error.get("email_addresses") or []:
                email = str(raw).strip().lower()
                refused[email] = Rejection(email, f"Mailchimp refused the segment change: {text}", "segment")
        return refused

    # -- I/O ------------------------------------------------------------------------------
    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        result = BatchResult()
        emails: list[str] = []
        for member in members:
            email = normalize_email(member.email)
            if email is None:
                result.rejected.append(Rejection(self.identity(member, options), "invalid email", "no_email"))
            elif member.email_consent != Consent.SUBSCRIBED:
                result.rejected.append(Rejection(email, "no marketing consent", "no_consent"))
            elif email not in emails:
                emails.append(email)
        segment = self.segment_id(audience, options)
        upserted: list[str] = []
        for chunk in chunks(emails, MAX_MEMBERS):
            body = {
                "members": [{"email_address": e, "status_if_new": "subscribed"} for e in chunk],
                "update_existing": True,
            }
            answer = self.client.send_json("POST", f"/lists/{quote(audience)}", json=body)
            refused = self._upsert_refusals(answer)
            self.counters["refused_by_status"] += sum(1 for r in refused.values() if r.code.startswith("mailchimp_"))
            result.rejected.extend(refused[e] for e in chunk if e in refused)
            upserted.extend(e for e in chunk if e not in refused)
        path = f"/lists/{quote(audience)}/segments/{segment}"
        for chunk in chunks(upserted, MAX_MEMBERS):
            answer = self.client.send_json("POST", path, json={"members_to_add": list(chunk)})
            refused = self._segment_refusals(answer, removing=False)
            result.rejected.extend(refused[e] for e in chunk if e in refused)
            result.accepted.extend(e for e in chunk if e not in refused)
        return result

    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult:
        """Take members out of the segment; the contacts themselves stay on the list."""
        result = BatchResult()
        path = f"/lists/{quote(audience)}/segments/{self.segment_id(audience, options)}"
        unique = list(dict.fromkeys(identities))
        for chunk in chunks(unique, MAX_MEMBERS):
            answer = self.client.send_json("POST", path, json={"members_to_remove": list(chunk)})
            refused = self._segment_refusals(answer, removing=True)
            result.rejected.extend(refused[e] for e in chunk if e in refused)
            result.accepted.extend(e for e in chunk if e not in refused)
        return result
