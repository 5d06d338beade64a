"""Data Manager API transport: google.rpc.Status errors mapped onto the taxonomy by the error table
(CONTRACT.md §12), and Google's fast-fail answer turned into the members it names.

An error body is ``{"error": {code, message, status, details[]}}``; the details carry ``ErrorInfo``
(``reason``, ``metadata.quota_limit``) and ``BadRequest.fieldViolations`` (``field``, ``reason``).
One bad member fails the whole request (fast-fail): when every violation points at
``audience_members[i]``, :class:`RefusedMembers` says which, so the destination can set them aside
and resend the rest. OAuth2 is in :mod:`connectors.google.auth`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import httpx

from connectors.google.auth import GoogleAuth
from connectors.kernel.error_table import ErrorTable, Found, Rule, json_or_none
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.http import HttpConnector
from connectors.kernel.redact import redact

#: a per-minute project quota refills within the minute; Google sends no Retry-After
PER_MINUTE_WAIT = 60.0
_MEMBER = re.compile(r"audience_members\[(\d+)\]")
_LIST_REASONS = frozenset(
    {
        "INVALID_USER_LIST_ID",
        "INVALID_USER_LIST_TYPE",
        "INVALID_DESTINATION",
        "DATA_PARTNER_USER_LIST_MUTATE_NOT_ALLOWED",
    }
)
TERMS_HINT = (
    "the Customer Match terms of service are not accepted for the operating account: a person with access to it "
    "accepts them in Google Ads, then sets terms_accepted = true for this destination"
)


@dataclass(frozen=True)
class Violation:
    """One ``BadRequest.fieldViolations`` entry (descriptions name fields, never member values)."""

    field: str
    reason: str
    description: str


def now_utc() -> datetime:
    return datetime.now(UTC)


def _pacific() -> tzinfo:
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo("America/Los_Angeles")
    except KeyError:  # no tz database in the image: Pacific standard time, as the emulator models it
        return timezone(timedelta(hours=-8))


def seconds_to_daily_reset(now: datetime | None = None) -> float:
    """Seconds until the next midnight Pacific time, when Google Cloud daily quotas reset (CONTRACT.md §6)."""
    local = (now or now_utc()).astimezone(_pacific())
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (midnight - local).total_seconds())


def google_status(response: httpx.Response, body: Any) -> Found:
    """``error.status`` as the code, ``error.message`` (and the first violations) as the text; the
    reasons of every detail, the quota name and the field violations in ``extra``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):  # a 2xx answer, an HTML 502, the token endpoint's OAuth format
        return Found(None, "") if response.status_code < 400 else Found(None, response.text[:300])
    reasons: list[str] = []
    violations: list[Violation] = []
    quota = ""
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("reason"):
            reasons.append(str(detail["reason"]))
        metadata = detail.get("metadata")
        if isinstance(metadata, dict) and metadata.get("quota_limit"):
            quota = str(metadata["quota_limit"])
        for v in detail.get("fieldViolations") or []:
            if isinstance(v, dict):
                field, reason, description = (str(v.get(k, "")) for k in ("field", "reason", "description"))
                violations.append(Violation(field, reason, description))
    status = str(error.get("status") or "") or None
    specific = [r for r in [*(v.reason for v in violations), *reasons] if r and r != status]
    text = str(error.get("message", ""))
    if violations:
        text += " " + "; ".join(v.description for v in violations[:3])
    extra: dict[str, Any] = {
        "reasons": frozenset(reasons + [v.reason for v in violations if v.reason]),
        "quota_limit": quota,
        "violations": tuple(violations),
    }
    shown = f"{status}/{specific[0]}" if status and specific else status
    return Found(status, text, extra, shown=shown)


def _reason(*names: str) -> Callable[[Found], bool]:
    wanted = frozenset(names)
    return lambda found: bool(wanted & found.extra.get("reasons", frozenset()))


def _daily(found: Found) -> bool:
    return "PerDay" in str(found.extra.get("quota_limit", ""))


ERRORS = ErrorTable(
    "google",
    [
        Rule(
            RateLimitedError,
            status=429,
            when=_daily,
            wait=lambda response, found: seconds_to_daily_reset(),
            hint="the Cloud project's daily Data Manager quota is used up; syncing resumes after it resets "
            "(midnight Pacific time)",
        ),
        Rule(RateLimitedError, status=429, wait=lambda response, found: PER_MINUTE_WAIT),
        Rule(RateLimitedError, code="RESOURCE_EXHAUSTED", wait=lambda response, found: PER_MINUTE_WAIT),
        Rule(ConfigError, when=_reason("TERMS_AND_CONDITIONS_NOT_SIGNED"), hint=TERMS_HINT),
        Rule(
            ConfigError,
            when=lambda found: bool(_LIST_REASONS & found.extra.get("reasons", frozenset())),
            hint="check the mapping's audience (the user list id) and operating_account / login_account",
        ),
        Rule(
            ConfigError,
            when=_reason("ACCESS_TOKEN_SCOPE_INSUFFICIENT"),
            hint="authorize the credentials for the scope https://www.googleapis.com/auth/datamanager",
        ),
        Rule(
            ConfigError,
            status=403,
            hint="the credentials' user or service account needs access to operating_account (set login_account "
            "when a manager account grants it)",
        ),
        Rule(ConfigError, status=401, hint="Google refused a freshly refreshed access token; re-authorize"),
        Rule(PermanentError, code="UNIMPLEMENTED"),
        Rule(RetryableError, code={"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"}),
        Rule(RetryableError, status=range(500, 600)),
    ],
    extract=google_status,
)


class RefusedMembers(PermanentError):
    """Fast-fail: Google refused the whole request because of these members (request index → reason)."""

    def __init__(self, message: str, refused: dict[int, tuple[str, str]], *, status: int | None = None) -> None:
        super().__init__(message, status=status, code="INVALID_ARGUMENT")
        #: index in the request's ``audienceMembers`` → (Google's reason, its description, redacted)
        self.refused = refused


def refused_members(found: Found) -> dict[int, tuple[str, str]] | None:
    """The members an INVALID_ARGUMENT names, or None when any violation is about something else
    (terms, the list, the request's shape): that is for the error table, not a member's fault."""
    violations: tuple[Violation, ...] = found.extra.get("violations", ())
    if found.code != "INVALID_ARGUMENT" or not violations:
        return None
    refused: dict[int, tuple[str, str]] = {}
    for v in violations:
        match = _MEMBER.search(v.field)
        if match is None:
            return None
        index = int(match.group(1))
        if index not in refused:
            refused[index] = (v.reason or "INVALID_ARGUMENT", redact(v.description)[:200])
    return refused


class GoogleClient(HttpConnector):
    """The error table, plus fast-fail answers raised as :class:`RefusedMembers`."""

    name = "google"
    errors = ERRORS
    timeout = 120.0

    def __init__(self, base_url: str, *, auth: GoogleAuth, **kwargs: Any) -> None:
        super().__init__(base_url, auth=auth, **kwargs)
        self.google_auth = auth

    def classify(self, response: httpx.Response) -> None:
        if response.status_code == 400:
            refused = refused_members(self.errors.extract(response, json_or_none(response)))
            if refused:
                reasons = sorted({reason for reason, _ in refused.values()})
                message = f"google: Google refused {len(refused)} member(s) of the request ({', '.join(reasons)})"
                raise RefusedMembers(message, refused, status=400)
        super().classify(response)

    def close(self) -> None:
        super().close()
        self.google_auth.close()
