"""A Google Data Manager API (``datamanager:v1``) emulator for Customer Match, with its OAuth2 token endpoint.

What it enforces, and where each rule comes from, is in ``connectors/google/CONTRACT.md``. In short:
paths, verbs and body schemas come from the carried discovery document (a missing one raises);
validation is fast-fail (one bad member refuses the whole request with ``INVALID_ARGUMENT`` and
field violations); processing is asynchronous (``requestStatus:retrieve`` answers ``PROCESSING`` for
``processing_polls`` polls, then per-destination counts, a match-rate range and per-record errors);
API calls need a bearer token this server issued at ``POST /token`` (refresh-token grant, or a
service account's RS256 JWT verified against a registered public key); project quotas are counted
per minute and per day on an injectable clock.

Membership is kept per (account type, account id, user list id). A member is the set of its
identifier keys (``email:<sha256 hex>``, ``phone:<sha256 hex>``, ``address:<given>:<family>:<region>:<postal>``,
``ip:<address>``); an upload that shares a key with a stored member refreshes that member. State
changes when the request is accepted; only the status report is delayed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from connectors.google import discovery
from connectors.google.discovery import SCOPE
from connectors.kernel.emulator import EmulatorServer, Faults, Request, Response

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

MAX_MEMBERS = 10_000
MAX_IDENTIFIERS = 10
MAX_DESTINATIONS = 10
MAX_MEMBERSHIP_DAYS = 540
DOMAIN = "datamanager.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

CLIENT_ID = "emulator-client.apps.googleusercontent.com"
CLIENT_SECRET = "emulator-client-secret"  # noqa: S105 - the emulator's test credential
REFRESH_TOKEN = "1//emulator-refresh-token"  # noqa: S105 - the emulator's test credential
DEFAULT_USER = "advertiser@example.com"

#: REST path -> the RPC name Google puts in ``ErrorInfo.metadata.method``
_RPC = {
    "datamanager.audienceMembers.ingest": "google.ads.datamanager.v1.IngestionService.IngestAudienceMembers",
    "datamanager.audienceMembers.remove": "google.ads.datamanager.v1.IngestionService.RemoveAudienceMembers",
    "datamanager.requestStatus.retrieve": "google.ads.datamanager.v1.IngestionService.RetrieveRequestStatus",
}
_DATA_FIELDS = (
    "userData",
    "compositeData",
    "pairData",
    "mobileData",
    "userIdData",
    "ppidData",
    "googleUserIdData",
    "partnerProvidedIdData",
)
_DATA_TYPES = {"emailAddress": "EMAIL", "phoneNumber": "PHONE_NUMBER", "address": "ADDRESS"}
_HEX = re.compile(r"^[0-9a-f]+$")
_REGION = re.compile(r"^[A-Z]{2}$")
_MATCH_BUCKETS: tuple[tuple[int, str], ...] = (
    (20, "LESS_THAN_20"),
    (31, "20_TO_30"),
    (41, "31_TO_40"),
    (51, "41_TO_50"),
    (61, "51_TO_60"),
    (71, "61_TO_70"),
    (81, "71_TO_80"),
    (91, "81_TO_90"),
    (101, "91_TO_100"),
)
#: Pacific standard time, when Google's daily quotas roll over (daylight saving is not modelled)
_PACIFIC = -8 * 3600


# -- Google error bodies ---------------------------------------------------------------------------
def google_error(
    code: int, status: str, message: str, details: Iterable[dict[str, Any]] = (), headers: dict[str, str] | None = None
) -> Response:
    """``{"error": {code, message, status, details}}``, the google.rpc.Status JSON every Google API answers."""
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    listed = list(details)
    if listed:
        body["details"] = listed
    return Response(code, {"error": body}, headers=headers or {})


def error_info(reason: str, domain: str = DOMAIN, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"@type": ERROR_INFO, "reason": reason, "domain": domain}
    if metadata:
        info["metadata"] = metadata
    return info


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    reason: str = ""  # a Data Manager ErrorReason, empty for JSON syntax/schema errors

    def json(self) -> dict[str, str]:
        out = {"field": self.field, "description": self.description}
        if self.reason:
            out["reason"] = self.reason
        return out


def invalid_argument(
    violations: list[FieldViolation], message: str = "There was a problem with the request."
) -> Response:
    details = [
        error_info("INVALID_ARGUMENT"),
        {"@type": BAD_REQUEST, "fieldViolations": [v.json() for v in violations]},
    ]
    return google_error(400, "INVALID_ARGUMENT", message, details)


def oauth_error(status: int, error: str, description: str) -> Response:
    """The token endpoint's own format (RFC 6749 §5.2), not google.rpc.Status."""
    return Response(status, {"error": error, "error_description": description})


def _schema_violation(v: discovery.Violation) -> FieldViolation:
    where = v.field or "(body)"
    if v.kind == "unknown_field":
        text = f"Invalid JSON payload received. Unknown name \"{v.name}\" at '{where}': Cannot find field."
    else:
        text = f"Invalid JSON payload received. Invalid value at '{where}': {v.message}"
    return FieldViolation(where, text)


# -- state -------------------------------------------------------------------------------------------
@dataclass
class MemberRecord:
    """One member of a user list, as Google keeps it: its identifier keys, consent, and when it was (re)sent."""

    keys: frozenset[str]
    ad_user_data: str
    ad_personalization: str
    first_added: datetime
    last_sent: datetime

    @property
    def identity(self) -> str:
        """The member's stable identity: its lowest hashed email (bare hex), else its lowest other key."""
        emails = sorted(k for k in self.keys if k.startswith("email:"))
        return emails[0].removeprefix("email:") if emails else min(self.keys)


@dataclass
class UserList:
    membership_days: int
    records: dict[int, MemberRecord] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)  # identifier key -> record id
    next_id: int = 0


ListKey = tuple[str, str, str]  # (account type, account id, user list id)
Account = tuple[str, str]  # (account type, account id)


@dataclass
class Token:
    value: str
    principal: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class _Member:
    index: int
    keys: frozenset[str]
    identifier_count: int
    types: Counter[str]
    ad_user_data: str
    ad_personalization: str
    references: tuple[str, ...]


@dataclass
class _Outcome:
    destination: dict[str, Any]
    record_count: int = 0
    identifier_count: int = 0
    types: Counter[str] = field(default_factory=Counter)
    errors: dict[str, list[int]] = field(default_factory=dict)  # processing error reason -> record indices


@dataclass
class _Submitted:
    kind: str  # "ingest" | "remove"
    composite: bool
    outcomes: list[_Outcome]
    polls: int = 0


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _effective(own: dict[str, str], request_level: dict[str, str], name: str) -> str:
    """A member's own consent overrides the request's, field by field; unspecified overrides nothing."""
    unspecified = "CONSENT_STATUS_UNSPECIFIED"
    value = own.get(name, unspecified)
    return value if value != unspecified else request_level.get(name, unspecified)


def match_rate_range(percent: float | None) -> str:
    if percent is None:
        return "MATCH_RATE_RANGE_UNKNOWN"
    return "MATCH_RATE_RANGE_" + next(name for bound, name in _MATCH_BUCKETS if percent < bound)


class GoogleDataManagerEmulator(EmulatorServer):
    """Start it, ``grant`` a principal an account, ``create_user_list``; get a token at ``token_uri``."""

    name = "google-datamanager"
    #: the user lists and their members (the sandbox keeps them between commands)
    state_attributes = ("lists",)

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        clock: Callable[[], float] = time.time,
        auto_create: bool = False,
        open_access: bool = False,
        processing_polls: int = 2,
        token_lifetime: int = 3599,
        mutate_quota: tuple[int, int] = (300, 100_000),
        read_quota: tuple[int, int] = (300, 100_000),
        match_rate: float = 0.7,
        eea: bool = False,
        project_number: str = "123456789012",
    ) -> None:
        super().__init__(faults)
        self.methods = {m: discovery.method(m) for m in _RPC}
        for m in self.methods.values():
            if m.request:
                discovery.validator(m.request)  # fails loudly, now, when the document is missing
        self.clock = clock
        #: create unknown user lists on first use (sandbox only: the sandbox cannot know list ids beforehand)
        self.auto_create = auto_create
        #: every principal may use every account (sandbox only)
        self.open_access = open_access
        #: how many ``requestStatus:retrieve`` polls of a request answer PROCESSING before the final status
        self.processing_polls = processing_polls
        self.token_lifetime = token_lifetime
        #: (per minute, per day) request quotas of the project: ingest+remove, and requestStatus reads
        self.quotas = {"Mutate": mutate_quota, "Read": read_quota}
        #: share of accepted records that "match" a Google account (drives ``uploadMatchRateRange``)
        self.match_rate = match_rate
        #: members are EEA users: consent left unspecified is not granted (counted UNKNOWN_CONSENT)
        self.eea = eea
        self.project_number = project_number
        #: hashed identifiers (lowercase hex) processing will count as per-record errors, to exercise
        #: PARTIAL_SUCCESS handling; ``poison_reason`` is the ProcessingErrorReason reported for them
        self.poisoned: set[str] = set()
        self.poison_reason = "PROCESSING_ERROR_REASON_INVALID_FORMAT"
        self.lists: dict[ListKey, UserList] = {}
        self.clients: dict[str, str] = {CLIENT_ID: CLIENT_SECRET}
        self.refresh_tokens: dict[str, tuple[str, str, frozenset[str]]] = {}
        self.service_accounts: dict[str, tuple[RSAPublicKey, str | None]] = {}
        self.tokens: dict[str, Token] = {}
        self.access: dict[str, set[Account]] = {}
        self.links: set[tuple[Account, Account]] = set()  # (manager/login account, operating account)
        self.submitted: dict[str, _Submitted] = {}
        #: (method, path, body) of every API request that reached a handler, for contract checks
        self.bodies: list[tuple[str, str, Any]] = []
        self.token_in_url = 0
        self._usage: Counter[tuple[str, int]] = Counter()
        self.add_refresh_token(REFRESH_TOKEN)
        self.route("POST", "/token", self._token)
        ingest, remove = (
            self.methods["datamanager.audienceMembers.ingest"],
            self.methods["datamanager.audienceMembers.remove"],
        )
        retrieve = self.methods["datamanager.requestStatus.retrieve"]
        self.route(ingest.http_method, ingest.path, lambda r: self._members(r, ingest))
        self.route(remove.http_method, remove.path, lambda r: self._members(r, remove))
        self.route(retrieve.http_method, retrieve.path, self._retrieve)

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- seeding and inspection --------------------------------------------------------------------
    def add_oauth_client(self, client_id: str, client_secret: str) -> None:
        with self.lock:
            self.clients[client_id] = client_secret

    def add_refresh_token(
        self,
        refresh_token: str,
        *,
        client_id: str = CLIENT_ID,
        principal: str = DEFAULT_USER,
        scopes: Iterable[str] = (SCOPE,),
    ) -> None:
        """A refresh token a user granted ``client_id`` (the consent screen happened elsewhere)."""
        with self.lock:
            self.refresh_tokens[refresh_token] = (client_id, principal, frozenset(scopes))

    def revoke_refresh_token(self, refresh_token: str) -> None:
        with self.lock:
            self.refresh_tokens.pop(refresh_token, None)

    def register_service_account(self, email: str, public_key_pem: bytes, *, key_id: str | None = None) -> None:
        """Trust JWTs signed by the private half of ``public_key_pem`` (PEM, RSA) and issued by ``email``."""
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(public_key_pem)
        if not isinstance(key, RSAPublicKey):
            raise ValueError("service account keys are RSA (RS256)")
        with self.lock:
            self.service_accounts[email] = (key, key_id)

    def issue_token(
        self, principal: str = DEFAULT_USER, scopes: Iterable[str] = (SCOPE,), lifetime: int | None = None
    ) -> str:
        """An access token as ``/token`` would issue it, for tests that do not exercise a grant."""
        value = "ya29." + secrets.token_urlsafe(32)
        expires = self.clock() + (self.token_lifetime if lifetime is None else lifetime)
        with self.lock:
            self.tokens[value] = Token(value, principal, frozenset(scopes), expires)
        return value

    def grant(self, principal: str, account_id: str, account_type: str = "GOOGLE_ADS") -> None:
        """``principal`` (a user or service-account email) is a user of that account."""
        with self.lock:
            self.access.setdefault(principal, set()).add((account_type, account_id))

    def link(self, login_id: str, operating_id: str, account_type: str = "GOOGLE_ADS") -> None:
        """``login_id`` manages ``operating_id`` (a manager account link), so it may be the ``loginAccount``."""
        with self.lock:
            self.links.add(((account_type, login_id), (account_type, operating_id)))

    def export_state(self) -> dict[str, Any]:
        with self.lock:
            return {"lists": {key: asdict(user_list) for key, user_list in self.lists.items()}}

    def import_state(self, state: dict[str, Any]) -> None:
        def user_list(saved: dict[str, Any]) -> UserList:
            records = {int(i): MemberRecord(**{**r, "keys": frozenset(r["keys"])}) for i, r in saved["records"].items()}
            return UserList(saved["membership_days"], records, dict(saved["index"]), saved["next_id"])

        with self.lock:
            self.lists = {tuple(key): user_list(saved) for key, saved in (state.get("lists") or {}).items()}

    def create_user_list(
        self, account: str, list_id: str, *, account_type: str = "GOOGLE_ADS", membership_days: int = 540
    ) -> None:
        """A Customer Match (contact information) list; members expire ``membership_days`` after their last upload."""
        if not 1 <= membership_days <= MAX_MEMBERSHIP_DAYS:
            raise ValueError(f"Customer Match membership lasts 1..{MAX_MEMBERSHIP_DAYS} days")
        with self.lock:
            self.lists.setdefault((account_type, account, list_id), UserList(membership_days))

    def _live(self, key: ListKey) -> list[MemberRecord]:
        user_list = self.lists[key]
        cutoff = self.now() - timedelta(days=user_list.membership_days)
        return [r for r in user_list.records.values() if r.last_sent > cutoff]

    def member_records(self, account: str, list_id: str, *, account_type: str = "GOOGLE_ADS") -> list[MemberRecord]:
        """Unexpired members with their keys, consent and upload times."""
        with self.lock:
            return sorted(self._live((account_type, account, list_id)), key=lambda r: r.identity)

    def members(self, account: str, list_id: str, *, account_type: str = "GOOGLE_ADS") -> set[str]:
        """Unexpired members by identity: the hashed email (bare hex), else ``phone:<hex>``, ``address:…``."""
        return {r.identity for r in self.member_records(account, list_id, account_type=account_type)}

    def refresh_due(
        self, account: str, list_id: str, *, within: timedelta = timedelta(days=30), account_type: str = "GOOGLE_ADS"
    ) -> set[str]:
        """Members that expire within ``within`` unless they are uploaded again."""
        with self.lock:
            days = self.lists[(account_type, account, list_id)].membership_days
            soon = self.now() + within - timedelta(days=days)
            return {r.identity for r in self._live((account_type, account, list_id)) if r.last_sent <= soon}

    def status_of(self, request_id: str) -> dict[str, Any]:
        """The final ``RetrieveRequestStatusResponse`` of a request, without counting as a poll."""
        with self.lock:
            return self._final_status(self.submitted[request_id])

    # -- auth --------------------------------------------------------------------------------------
    def _bearer(self, request: Request) -> str | None:
        header = request.header("authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if "access_token" in request.query:
            with self.lock:
                self.token_in_url += 1
            return request.query["access_token"][0]
        return None

    def _token_for(self, request: Request) -> Token | None:
        value = self._bearer(request)
        with self.lock:
            token = self.tokens.get(value or "")
        return token if token is not None and token.expires_at > self.clock() else None

    def authorised(self, request: Request) -> bool:
        return request.path == "/token" or self._token_for(request) is not None

    def _method_id(self, request: Request) -> str:
        return next((m.id for m in self.methods.values() if m.path == request.path), "")

    def unauthorised(self, request: Request) -> Response:
        value = self._bearer(request)
        meta = {"service": DOMAIN, "method": _RPC.get(self._method_id(request), "")}
        challenge = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'}
        if value is None:
            message = (
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
            )
            info = error_info("CREDENTIALS_MISSING", "googleapis.com", meta)
            return google_error(401, "UNAUTHENTICATED", message, [info], {"WWW-Authenticate": "Bearer"})
        with self.lock:
            known = value in self.tokens
        message = (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
            "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
        )
        reason = "ACCESS_TOKEN_EXPIRED" if known else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        return google_error(401, "UNAUTHENTICATED", message, [error_info(reason, "googleapis.com", meta)], challenge)

    def _scope_check(self, request: Request, token: Token) -> Response | None:
        if SCOPE in token.scopes:
            return None
        meta = {"service": DOMAIN, "method": _RPC.get(self._method_id(request), "")}
        headers = {
            "WWW-Authenticate": f'Bearer realm="https://accounts.google.com/", error="insufficient_scope", '
            f'scope="{SCOPE}"'
        }
        info = error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", "googleapis.com", meta)
        return google_error(
            403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.", [info], headers
        )

    def _may_use(self, principal: str, account: Account) -> bool:
        return self.open_access or account in self.access.get(principal, set())

    # -- quotas, throttling, server errors -----------------------------------------------------------
    def _quota_error(self, kind: str, window: str) -> Response:
        limit_name = f"Ingestion{kind}RequestsPer{window}PerProject"
        per_minute, per_day = self.quotas[kind]
        value = per_minute if window == "Minute" else per_day
        metric = f"{DOMAIN}/ingestion_{kind.lower()}_requests"
        message = (
            f"Quota exceeded for quota metric '{metric}' and limit '{limit_name}' of service '{DOMAIN}' "
            f"for consumer 'project_number:{self.project_number}'."
        )
        meta = {
            "service": DOMAIN,
            "consumer": f"projects/{self.project_number}",
            "quota_metric": metric,
            "quota_limit": limit_name,
            "quota_limit_value": str(value),
            "quota_location": "global",
        }
        return google_error(
            429, "RESOURCE_EXHAUSTED", message, [error_info("RATE_LIMIT_EXCEEDED", "googleapis.com", meta)]
        )

    def _take_quota(self, kind: str) -> Response | None:
        """Count one request against the project's per-minute and per-day quotas, or answer 429."""
        now = self.clock()
        per_minute, per_day = self.quotas[kind]
        day, minute = (f"{kind}Day", int((now + _PACIFIC) // 86400)), (f"{kind}Minute", int(now // 60))
        with self.lock:
            if self._usage[day] >= per_day:
                return self._quota_error(kind, "Day")
            if self._usage[minute] >= per_minute:
                return self._quota_error(kind, "Minute")
            self._usage[day] += 1
            self._usage[minute] += 1
        return None

    def throttled(self, request: Request) -> Response:
        return self._quota_error("Read" if request.method == "GET" else "Mutate", "Minute")

    def server_error(self, request: Request, status: int) -> Response:
        if status == 502:  # Google's front end answers a 502 with an HTML page, not JSON
            return Response(
                502, raw=b"<!DOCTYPE html><title>Error 502 (Server Error)!!1</title>", content_type="text/html"
            )
        if status == 503:
            return google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
        return google_error(status, "INTERNAL", "Internal error encountered.")

    # -- handlers ------------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Callable[[Request], Response]) -> None:
        def recorded(request: Request) -> Response:
            response = handler(request)
            try:
                body = request.json() if request.path != "/token" else None
            except ValueError:
                body = None
            members = body.get("audienceMembers") if isinstance(body, dict) else None
            self.record(request, response.status, len(members) if isinstance(members, list) else None)
            return response

        super().route(method, pattern, recorded)

    def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            return self._refresh_grant(request, form)
        if grant == JWT_BEARER:
            return self._jwt_grant(form.get("assertion", ""))
        return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")

    def _issue(self, principal: str, scopes: frozenset[str]) -> Response:
        token = self.issue_token(principal, scopes)
        body = {"access_token": token, "expires_in": self.token_lifetime, "scope": " ".join(sorted(scopes))}
        return Response(200, {**body, "token_type": "Bearer"}, headers={"Cache-Control": "no-store"})

    def _refresh_grant(self, request: Request, form: dict[str, str]) -> Response:
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        scheme, _, value = (request.header("authorization") or "").partition(" ")
        if scheme.lower() == "basic":  # client credentials may come as HTTP Basic instead of form fields
            try:
                client_id, _, client_secret = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return oauth_error(401, "invalid_client", "Unauthorized")
        with self.lock:
            if self.clients.get(client_id) != client_secret or not client_secret:
                return oauth_error(401, "invalid_client", "Unauthorized")
            grant = self.refresh_tokens.get(form.get("refresh_token", ""))
        if grant is None or grant[0] != client_id:
            return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        _, principal, granted = grant
        wanted = frozenset(form["scope"].split()) if form.get("scope") else granted
        if not wanted <= granted:
            return oauth_error(400, "invalid_scope", "Some requested scopes were invalid.")
        return self._issue(principal, wanted)

    def _jwt_grant(self, assertion: str) -> Response:
        """Verify a service account's self-signed RS256 assertion (RFC 7523) and trade it for a token."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = assertion.split(".")
        try:
            header, claims = (json.loads(_b64url(p)) for p in parts[:2])
            signature = _b64url(parts[2])
        except (ValueError, IndexError, binascii.Error):
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        with self.lock:
            known = self.service_accounts.get(str(claims.get("iss", "")))
        if known is None:
            return oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        key, key_id = known
        try:
            key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if key_id is not None and header.get("kid") not in (None, key_id):
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") not in (self.token_uri, GOOGLE_TOKEN_URI):
            return oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        now, iat, exp = self.clock(), claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or not (0 < exp - iat <= 3600 and iat - 300 <= now < exp)
        ):
            return oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                "Check your iat and exp values in the JWT claim.",
            )
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return self._issue(str(claims.get("sub") or claims["iss"]), scopes)

    def _members(self, request: Request, method: discovery.Method) -> Response:
        token = self._token_for(request)
        assert token is not None  # authorised() let it through
        denied = self._scope_check(request, token)
        if denied is not None:
            return denied
        throttled = self._take_quota("Mutate")
        if throttled is not None:
            return throttled
        try:
            body = request.json()
        except ValueError as exc:
            return invalid_argument(
                [FieldViolation("", f"Invalid JSON payload received. {exc}")], "Invalid JSON payload received."
            )
        with self.lock:
            self.bodies.append((request.method, request.path, body))
        assert method.request is not None
        schema_errors = [_schema_violation(v) for v in discovery.errors(method.request, body)]
        if schema_errors:
            return invalid_argument(schema_errors, schema_errors[0].description)
        if "encryptionInfo" in body:
            return google_error(501, "UNIMPLEMENTED", "encryptionInfo is not modelled by this emulator.")
        ingest = method.id.endswith(".ingest")
        structure = self._check_structure(body)
        if structure:
            return invalid_argument(structure)
        denied = self._check_access(token.principal, body["destinations"])
        if denied is not None:
            return denied
        members, violations = self._parse_members(body)
        violations += self._check_lists(body["destinations"])
        if ingest and body.get("termsOfService", {}).get("customerMatchTermsOfServiceStatus") != "ACCEPTED":
            text = (
                "The Customer Match terms of service must be accepted "
                "(termsOfService.customerMatchTermsOfServiceStatus = ACCEPTED)."
            )
            violations.append(
                FieldViolation(
                    "terms_of_service.customer_match_terms_of_service_status", text, "TERMS_AND_CONDITIONS_NOT_SIGNED"
                )
            )
        if violations:
            return invalid_argument(violations)
        if body.get("validateOnly"):
            return Response(200, {})  # validated, not executed: no request id (nothing to retrieve later)
        with self.lock:
            outcomes = self._apply(body, members, ingest)
            request_id = str(uuid.uuid4())
            composite = any("compositeData" in m for m in body["audienceMembers"])
            self.submitted[request_id] = _Submitted("ingest" if ingest else "remove", composite, outcomes)
        return Response(200, {"requestId": request_id})

    def _check_structure(self, body: dict[str, Any]) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        destinations, members = body.get("destinations") or [], body.get("audienceMembers") or []
        if not destinations:
            found.append(
                FieldViolation("destinations", "At least one destination is required.", "REQUIRED_FIELD_MISSING")
            )
        if len(destinations) > MAX_DESTINATIONS:
            text = f"At most {MAX_DESTINATIONS} destinations are allowed per request."
            found.append(FieldViolation("destinations", text, "TOO_MANY_DESTINATIONS"))
        if not members:
            found.append(
                FieldViolation(
                    "audience_members", "At least one audience member is required.", "REQUIRED_FIELD_MISSING"
                )
            )
        if len(members) > MAX_MEMBERS:
            text = f"At most {MAX_MEMBERS} audience members are allowed per request."
            found.append(FieldViolation("audience_members", text, "TOO_MANY_AUDIENCE_MEMBERS"))
        kinds = {k for m in members for k in _DATA_FIELDS if k in m}
        if len(kinds) > 1:
            text = "All audience members of a request must carry the same type of data."
            found.append(FieldViolation("audience_members", text, "MULTIPLE_DATA_TYPES_NOT_ALLOWED"))
        if (
            kinds & {"userData", "compositeData"}
            and body.get("encoding", "ENCODING_UNSPECIFIED") == "ENCODING_UNSPECIFIED"
        ):
            found.append(
                FieldViolation("encoding", "encoding is required for user data uploads.", "REQUIRED_FIELD_MISSING")
            )
        references: Counter[str] = Counter(d["reference"] for d in destinations if d.get("reference"))
        for k, dest in enumerate(destinations):
            where = f"destinations[{k}]"
            operating = dest.get("operatingAccount") or {}
            if (
                not operating.get("accountId")
                or operating.get("accountType", "ACCOUNT_TYPE_UNSPECIFIED") == "ACCOUNT_TYPE_UNSPECIFIED"
            ):
                text = "operatingAccount needs accountType and accountId."
                found.append(FieldViolation(f"{where}.operating_account", text, "REQUIRED_FIELD_MISSING"))
            for name in ("operatingAccount", "loginAccount"):
                account = dest.get(name) or {}
                if account.get("accountType") == "GOOGLE_ADS" and not str(account.get("accountId", "0")).isdigit():
                    text = "A Google Ads account ID is digits only, without hyphens."
                    found.append(
                        FieldViolation(f"{where}.{discovery.snake(name)}.account_id", text, "INVALID_DESTINATION")
                    )
            if not dest.get("productDestinationId"):
                text = "productDestinationId (the user list ID) is required."
                found.append(FieldViolation(f"{where}.product_destination_id", text, "REQUIRED_FIELD_MISSING"))
            if dest.get("reference") and references[dest["reference"]] > 1:
                text = "Destination references must be unique within a request."
                found.append(FieldViolation(f"{where}.reference", text, "DUPLICATE_DESTINATION_REFERENCE"))
        return found

    def _check_access(self, principal: str, destinations: list[dict[str, Any]]) -> Response | None:
        with self.lock:
            for dest in destinations:
                operating = (dest["operatingAccount"]["accountType"], dest["operatingAccount"]["accountId"])
                login = dest.get("loginAccount")
                via = (login.get("accountType", ""), login.get("accountId", "")) if login else operating
                linked = via == operating or (via, operating) in self.links or self.open_access
                if not (self._may_use(principal, via) and linked):
                    message = f"The caller does not have permission to use account {operating[0]}/{operating[1]}."
                    return google_error(403, "PERMISSION_DENIED", message, [error_info("PERMISSION_DENIED")])
        return None

    def _check_lists(self, destinations: list[dict[str, Any]]) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        with self.lock:
            for k, dest in enumerate(destinations):
                key = self._list_key(dest)
                if key not in self.lists and not self.auto_create:
                    text = f"User list {key[2]} does not exist in account {key[0]}/{key[1]}."
                    found.append(
                        FieldViolation(f"destinations[{k}].product_destination_id", text, "INVALID_USER_LIST_ID")
                    )
        return found

    @staticmethod
    def _list_key(dest: dict[str, Any]) -> ListKey:
        operating = dest["operatingAccount"]
        return (operating["accountType"], operating["accountId"], dest["productDestinationId"])

    def _parse_members(self, body: dict[str, Any]) -> tuple[list[_Member], list[FieldViolation]]:
        encoding = body.get("encoding", "ENCODING_UNSPECIFIED")
        default_consent = body.get("consent") or {}
        references = {d.get("reference") for d in body["destinations"] if d.get("reference")}
        parsed: list[_Member] = []
        found: list[FieldViolation] = []
        for i, raw in enumerate(body["audienceMembers"]):
            member = self._parse_member(i, raw, encoding, found)
            if member is None:
                continue
            own = raw.get("consent") or {}
            member.ad_user_data = _effective(own, default_consent, "adUserData")
            member.ad_personalization = _effective(own, default_consent, "adPersonalization")
            unknown = set(member.references) - references
            if unknown:
                text = f"Unknown destination reference(s): {', '.join(sorted(unknown))}."
                found.append(
                    FieldViolation(
                        f"audience_members.audience_members[{i}].destination_references", text, "INVALID_DESTINATION"
                    )
                )
            parsed.append(member)
        return parsed, found

    def _parse_member(self, i: int, raw: dict[str, Any], encoding: str, found: list[FieldViolation]) -> _Member | None:
        where = f"audience_members.audience_members[{i}]"
        kinds = [k for k in _DATA_FIELDS if k in raw]
        if len(kinds) > 1:
            text = f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{kinds[1]}'"
            found.append(FieldViolation(where, text))
            return None
        if not kinds:
            found.append(FieldViolation(where, "The audience member has no data.", "INVALID_AUDIENCE_MEMBER"))
            return None
        if kinds[0] not in ("userData", "compositeData"):
            text = f"{kinds[0]} cannot be sent to a contact-information Customer Match list."
            found.append(FieldViolation(where, text, "INVALID_USER_LIST_TYPE"))
            return None
        inner = raw[kinds[0]] if kinds[0] == "userData" else raw["compositeData"].get("userData") or {}
        ids_where = f"{where}.{discovery.snake(kinds[0])}" + (".user_data" if kinds[0] == "compositeData" else "")
        ids_where += ".user_identifiers"
        identifiers: list[dict[str, Any]] = inner.get("userIdentifiers") or []
        ips = [ip["ipAddress"] for ip in raw.get("compositeData", {}).get("ipData") or [] if ip.get("ipAddress")]
        keys: set[str] = {f"ip:{ip}" for ip in ips}
        types: Counter[str] = Counter({"IP_ADDRESS": len(ips)} if ips else {})
        if not identifiers and not ips:
            found.append(
                FieldViolation(ids_where, "At least one user identifier is required.", "REQUIRED_FIELD_MISSING")
            )
            return None
        if len(identifiers) > MAX_IDENTIFIERS:
            text = f"At most {MAX_IDENTIFIERS} user identifiers are allowed per audience member."
            found.append(FieldViolation(ids_where, text, "TOO_MANY_USER_IDENTIFIERS"))
            return None
        before = len(found)
        for j, ident in enumerate(identifiers):
            set_fields = [k for k in _DATA_TYPES if k in ident]
            if len(set_fields) != 1:
                text = (
                    "Invalid JSON payload received. Oneof field 'identifier' is already set. "
                    f"Cannot set '{set_fields[1]}'"
                    if set_fields
                    else "A user identifier needs exactly one of emailAddress, phoneNumber or address."
                )
                found.append(FieldViolation(f"{ids_where}[{j}]", text, "" if set_fields else "REQUIRED_FIELD_MISSING"))
                continue
            kind = set_fields[0]
            types[_DATA_TYPES[kind]] += 1
            key = self._identifier_key(kind, ident[kind], encoding, where, ids_where, found)
            if key is not None:
                keys.add(key)
        if len(found) > before:
            return None
        references = tuple(raw.get("destinationReferences") or ())
        return _Member(i, frozenset(keys), len(identifiers) + len(ips), types, "", "", references)

    def _identifier_key(
        self, kind: str, value: Any, encoding: str, where: str, ids_where: str, found: list[FieldViolation]
    ) -> str | None:
        if kind != "address":
            label = {"emailAddress": "Email", "phoneNumber": "Phone number"}[kind]
            digest = self._digest(str(value), encoding, label, where, ids_where, found)
            return None if digest is None else f"{'email' if kind == 'emailAddress' else 'phone'}:{digest}"
        address: dict[str, Any] = value
        names = [
            self._digest(str(address.get(n, "")), encoding, label, where, ids_where, found)
            for n, label in (("givenName", "Given name"), ("familyName", "Family name"))
        ]
        region, postal = str(address.get("regionCode", "")), str(address.get("postalCode", "")).strip()
        ok = all(n is not None for n in names)
        if not _REGION.match(region):
            text = "regionCode must be an ISO-3166-1 alpha-2 code in capitals, unhashed."
            found.append(FieldViolation(f"{ids_where}.address.region_code", text, "INVALID_COUNTRY_CODE"))
            ok = False
        if not postal:
            found.append(
                FieldViolation(f"{ids_where}.address.postal_code", "postalCode is required.", "REQUIRED_FIELD_MISSING")
            )
            ok = False
        return f"address:{names[0]}:{names[1]}:{region}:{postal}" if ok else None

    @staticmethod
    def _digest(
        value: str, encoding: str, label: str, where: str, ids_where: str, found: list[FieldViolation]
    ) -> str | None:
        """The SHA-256 digest in ``value`` as lowercase hex, or ``None`` after recording why it is not one."""
        if encoding == "HEX":
            if not _HEX.match(value) or len(value) % 2:
                found.append(
                    FieldViolation(ids_where, f"{label} is not lowercase hex encoded.", "INVALID_HEX_ENCODING")
                )
                return None
            raw = bytes.fromhex(value)
        else:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                found.append(FieldViolation(ids_where, f"{label} is not base64 encoded.", "INVALID_BASE64_ENCODING"))
                return None
        if len(raw) != 32:
            found.append(FieldViolation(where, f"{label} is not a SHA-256 digest.", "INVALID_SHA256_FORMAT"))
            return None
        return raw.hex()

    def _apply(self, body: dict[str, Any], members: list[_Member], ingest: bool) -> list[_Outcome]:
        now = self.now()
        outcomes: list[_Outcome] = []
        for dest in body["destinations"]:
            outcome = _Outcome(destination=dest)
            user_list = self.lists.setdefault(self._list_key(dest), UserList(MAX_MEMBERSHIP_DAYS))
            for member in members:
                if member.references and dest.get("reference") not in member.references:
                    continue
                outcome.record_count += 1
                outcome.identifier_count += member.identifier_count
                outcome.types.update(member.types)
                reason = self._processing_error(member) if ingest else None
                if reason is not None:
                    outcome.errors.setdefault(reason, []).append(member.index)
                elif ingest:
                    self._upsert(user_list, member, now)
                else:
                    self._remove(user_list, member.keys)
            outcomes.append(outcome)
        return outcomes

    def _processing_error(self, member: _Member) -> str | None:
        consents = (member.ad_user_data, member.ad_personalization)
        if "CONSENT_DENIED" in consents:
            return "PROCESSING_ERROR_REASON_DENIED_CONSENT"
        if self.eea and "CONSENT_STATUS_UNSPECIFIED" in consents:
            return "PROCESSING_ERROR_REASON_UNKNOWN_CONSENT"
        if any(k.partition(":")[2] in self.poisoned for k in member.keys):
            return self.poison_reason
        return None

    @staticmethod
    def _upsert(user_list: UserList, member: _Member, now: datetime) -> None:
        found = sorted({user_list.index[k] for k in member.keys if k in user_list.index})
        keys = set(member.keys)
        first_added = now
        for record_id in found:  # the upload names the same person as these records: one member again
            old = user_list.records.pop(record_id)
            keys |= old.keys
            first_added = min(first_added, old.first_added)
        record_id = user_list.next_id
        user_list.next_id += 1
        record = MemberRecord(frozenset(keys), member.ad_user_data, member.ad_personalization, first_added, now)
        user_list.records[record_id] = record
        for key in keys:
            user_list.index[key] = record_id

    @staticmethod
    def _remove(user_list: UserList, keys: frozenset[str]) -> None:
        for record_id in {user_list.index[k] for k in keys if k in user_list.index}:
            for key in user_list.records.pop(record_id).keys:
                user_list.index.pop(key, None)

    def _retrieve(self, request: Request) -> Response:
        token = self._token_for(request)
        assert token is not None
        denied = self._scope_check(request, token)
        if denied is not None:
            return denied
        throttled = self._take_quota("Read")
        if throttled is not None:
            return throttled
        request_id = (request.query.get("requestId") or [""])[0]
        if not request_id:
            return invalid_argument([FieldViolation("request_id", "request_id is required.", "REQUIRED_FIELD_MISSING")])
        with self.lock:
            submitted = self.submitted.get(request_id)
            if submitted is None:
                text = "Status can only be retrieved for requests that succeeded and were not validate-only."
                return invalid_argument([FieldViolation("request_id", text, "INVALID_REQUEST_ID")])
            submitted.polls += 1
            if submitted.polls <= self.processing_polls:
                pending = [{"destination": o.destination, "requestStatus": "PROCESSING"} for o in submitted.outcomes]
                return Response(200, {"requestStatusPerDestination": pending})
            return Response(200, self._final_status(submitted))

    def _final_status(self, submitted: _Submitted) -> dict[str, Any]:
        statuses: list[dict[str, Any]] = []
        for outcome in submitted.outcomes:
            failed = len({i for indices in outcome.errors.values() for i in indices})
            total = outcome.record_count
            state = "SUCCESS" if failed == 0 else "FAILED" if failed == total else "PARTIAL_SUCCESS"
            entry: dict[str, Any] = {"destination": outcome.destination, "requestStatus": state}
            counts: dict[str, Any] = {"recordCount": str(total)}
            if submitted.composite:
                counts["dataTypeCounts"] = [{"type": t, "count": str(n)} for t, n in sorted(outcome.types.items())]
            else:
                counts["userIdentifierCount"] = str(outcome.identifier_count)
            kind = "compositeData" if submitted.composite else "userData"
            if submitted.kind == "ingest":
                percent = 100 * (total - failed) * self.match_rate / total if total else None
                counts["uploadMatchRateRange"] = match_rate_range(percent)
                entry["audienceMembersIngestionStatus"] = {f"{kind}IngestionStatus": counts}
            else:
                entry["audienceMembersRemovalStatus"] = {f"{kind}RemovalStatus": counts}
            if outcome.errors:
                entry["errorInfo"] = {
                    "errorCounts": [
                        {"reason": reason, "recordCount": str(len(indices)), "recordIndices": sorted(indices)}
                        for reason, indices in sorted(outcome.errors.items())
                    ]
                }
            statuses.append(entry)
        return {"requestStatusPerDestination": statuses}


def sandbox_emulator(world: object = None) -> tuple[GoogleDataManagerEmulator, str]:
    """For ``worker.sandbox``: any account and user list works. The secret is google-auth
    ``authorized_user`` info as JSON; its ``token_uri`` is ``<base_url>/token``, known once started."""
    # requests are processed by the first status read: a sandbox batch waits one poll, not three
    emulator = GoogleDataManagerEmulator(auto_create=True, open_access=True, processing_polls=0)
    info = {
        "type": "authorized_user",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
    return emulator, json.dumps(info)
