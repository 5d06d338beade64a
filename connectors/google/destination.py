"""Google Customer Match through the Data Manager API: ``audienceMembers:ingest`` adds, ``:remove`` removes.

A request carries at most 10,000 members of one user list (the mapping's ``audience``, sent as
``productDestinationId``) in the configured operating account. Identities, hashing and consent are
in :mod:`connectors.google.members`. Ingest states the Customer Match terms as accepted only when the
store owner said so (``terms_accepted``); removal has no terms or consent fields.

Google fast-fails a whole request on one bad member: the members its field violations name are
rejected with Google's reason and the rest are sent again. An accepted request is then read back
through ``requestStatus:retrieve`` (:mod:`connectors.google.diagnostics`): records Google reports as
failed are rejected by index, and statuses, counts and match-rate ranges go into :meth:`stats`.
:meth:`validate` sends the same requests with ``validateOnly`` (a dry run: nothing changes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.google import VENDOR
from connectors.google.auth import GoogleAuth, TokenTransport, is_local, load_credentials
from connectors.google.client import ERRORS, TERMS_HINT, GoogleClient, RefusedMembers
from connectors.google.diagnostics import Diagnostics
from connectors.google.members import (
    KEYS,
    Key,
    audience_member,
    consent_refusal,
    decode_identity,
    encode_identity,
    hoist_consent,
    row,
    user_data,
)
from connectors.kernel.destination import (
    BatchResult,
    Destination,
    DestinationConfig,
    KeyedOptions,
    MappingOptions,
    Rejection,
    chunks,
)
from connectors.kernel.errors import ConfigError, PermanentError
from connectors.kernel.records import Member
from connectors.kernel.runtime import Runtime

MAX_MEMBERS = 10_000
INGEST = "/v1/audienceMembers:ingest"
REMOVE = "/v1/audienceMembers:remove"
#: resends of one batch after fast-fail refusals; each drops at least one member, so more is our bug
MAX_PASSES = 20
AccountType = Literal["GOOGLE_ADS", "DISPLAY_VIDEO_PARTNER", "DISPLAY_VIDEO_ADVERTISER", "DATA_PARTNER"]
Body = Callable[[Sequence["Entry"]], dict[str, Any]]


class ProductAccount(BaseModel):
    """An account as Data Manager names it; a Google Ads id may be written as the UI shows it (123-456-7890)."""

    model_config = ConfigDict(extra="forbid")
    account_type: AccountType = "GOOGLE_ADS"
    account_id: str = Field(min_length=1)

    @model_validator(mode="after")
    def _google_ads_digits(self) -> ProductAccount:
        if self.account_type == "GOOGLE_ADS":
            digits = self.account_id.strip().replace("-", "")
            if not digits.isdigit():
                raise ValueError("a Google Ads account id is digits only (1234567890 or 123-456-7890)")
            self.account_id = digits
        return self

    def body(self) -> dict[str, str]:
        return {"accountType": self.account_type, "accountId": self.account_id}


class GoogleConfig(DestinationConfig):
    type: Literal["google"] = "google"
    base_url: str = "https://datamanager.googleapis.com"
    #: the account that owns the user lists (required to send; checked when the destination first sends)
    operating_account: ProductAccount | None = None
    #: the account the credentials' user belongs to, when it is a manager of the operating account
    login_account: ProductAccount | None = None
    #: the OAuth token endpoint; unset: Google's (or ``<base_url>/token`` for an emulator on this machine)
    token_uri: str | None = None
    #: the Cloud project billed for quota (``x-goog-user-project``), for authorized-user credentials
    quota_project: str | None = None
    #: the store owner says the Customer Match terms are accepted for the operating account
    terms_accepted: bool = False
    #: client-side throttle under the project's 300 requests a minute (shared by all its destinations)
    requests_per_minute: float = Field(default=240.0, gt=0)
    burst: float = Field(default=10.0, ge=1)
    #: ``requestStatus:retrieve`` polls per batch, the first wait (doubling), and the run's waiting budget
    status_polls: int = Field(default=3, ge=0, le=10)
    status_first_wait: float = Field(default=1.0, ge=0)
    status_budget_seconds: float = Field(default=30.0, ge=0)


class GoogleOptions(KeyedOptions):
    keys: list[Key] = Field(default_factory=lambda: list(KEYS))


@dataclass(frozen=True)
class Entry:
    """One member of a request: the identity we answer for and the ``AudienceMember`` we send."""

    identity: str
    body: dict[str, Any]


class GoogleDestination(Destination):
    kind = "google"
    audience_kind = "ads"
    batch_size = MAX_MEMBERS
    targeting_minimum = ("Google", 100)
    membership_ttl_days = 540
    Config = GoogleConfig
    Options = GoogleOptions

    def __init__(self, name: str, config: DestinationConfig, runtime: Runtime) -> None:
        super().__init__(name, config, runtime)
        assert isinstance(config, GoogleConfig)
        self.google_config = config
        self.diagnostics = Diagnostics(
            runtime.sleep,
            polls=config.status_polls,
            first_wait=config.status_first_wait,
            budget=config.status_budget_seconds,
        )

    # -- the client ------------------------------------------------------------------------------
    def token_uri(self) -> str | None:
        cfg = self.google_config
        if cfg.token_uri:
            return cfg.token_uri
        # an emulator on this machine (the sandbox) issues its own tokens; never a remote host
        return cfg.base_url.rstrip("/") + "/token" if is_local(cfg.base_url) else None

    def build_client(self) -> GoogleClient:
        cfg = self.google_config
        variable = VENDOR.secrets["secret"]
        loaded = load_credentials(
            self.credential(), variable=variable, token_uri=self.token_uri(), quota_project=cfg.quota_project
        )
        return GoogleClient(
            cfg.base_url,
            auth=GoogleAuth(loaded.credentials, TokenTransport(ERRORS)),
            retry=self.runtime.retry_policy(),
            rate_limiter=self.runtime.rate_limiter(
                f"google:{loaded.quota_key}", cfg.requests_per_minute / 60, cfg.burst
            ),
        )

    # -- eligibility and identity ------------------------------------------------------------------
    def _keys(self, options: MappingOptions) -> list[Key]:
        return self.opts(options, GoogleOptions).keys

    def ineligible_reason(self, member: Member) -> str | None:
        """No email or phone, an opt-out, or no consent where Google needs it (see :mod:`.members`)."""
        return super().ineligible_reason(member) or consent_refusal(member, self.runtime.default_phone_region)

    def identity(self, member: Member, options: MappingOptions) -> str:
        keys = self._keys(options)
        return encode_identity(keys, row(member, keys, self.runtime.default_phone_region))

    def _entries(self, members: Sequence[Member], keys: Sequence[str], result: BatchResult) -> list[Entry]:
        """Members to send, each identity once; the ones we must not send rejected here."""
        entries: list[Entry] = []
        answered: set[str] = set()
        for member in members:
            values = row(member, keys, self.runtime.default_phone_region)
            identity = encode_identity(keys, values)
            if identity in answered:
                continue
            answered.add(identity)
            reason = self.ineligible_reason(member) or (None if any(values) else "no_identifier")
            if reason is not None:
                text = "no usable email or phone" if reason == "no_identifier" else f"not sent to Google: {reason}"
                result.rejected.append(Rejection(identity, text, reason))
            else:
                entries.append(Entry(identity, audience_member(member, keys, values)))
        return entries

    # -- requests --------------------------------------------------------------------------------
    def _destination(self, audience: str) -> dict[str, Any]:
        cfg = self.google_config
        if cfg.operating_account is None:
            raise ConfigError(
                f"google ({self.name}): set operating_account (account_id, and account_type unless GOOGLE_ADS): "
                "the account that owns the user lists"
            )
        out: dict[str, Any] = {"operatingAccount": cfg.operating_account.body(), "productDestinationId": audience}
        if cfg.login_account is not None:
            out["loginAccount"] = cfg.login_account.body()
        return out

    def _ingest_body(self, audience: str, *, validate_only: bool = False) -> Body:
        def body(entries: Sequence[Entry]) -> dict[str, Any]:
            members, consent = hoist_consent([e.body for e in entries])
            out: dict[str, Any] = {"destinations": [self._destination(audience)], "audienceMembers": members}
            if consent is not None:
                out["consent"] = consent
            out["encoding"] = "HEX"
            out["termsOfService"] = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
            if validate_only:
                out["validateOnly"] = True
            return out

        return body

    def _remove_body(self, audience: str) -> Body:
        return lambda entries: {
            "destinations": [self._destination(audience)],
            "audienceMembers": [e.body for e in entries],
            "encoding": "HEX",
        }

    def _require_terms(self) -> None:
        if not self.google_config.terms_accepted:
            raise ConfigError(f"google ({self.name}): {TERMS_HINT}")

    def _send(
        self, path: str, body: Body, entries: Sequence[Entry], result: BatchResult
    ) -> tuple[list[Entry], dict[str, Any]]:
        """Send, setting aside the members a fast-fail answer names; what was sent last and the answer."""
        pending = list(entries)
        for _ in range(MAX_PASSES):
            if not pending:
                return [], {}
            try:
                return pending, self.client.send_json("POST", path, json=body(pending))
            except RefusedMembers as exc:
                if any(not 0 <= i < len(pending) for i in exc.refused):
                    raise PermanentError(f"{exc.message}, at indices the request does not have") from None
                if len(pending) > 1 and len(exc.refused) == len(pending):
                    # every member at once is our bug (hashing, encoding), not bad data: fail loudly
                    raise PermanentError(f"{exc.message}: all of them; not rejecting a whole batch") from None
                for i, (reason, text) in sorted(exc.refused.items()):
                    why = f"Google refused the member ({reason})" + (f": {text}" if text else "")
                    result.rejected.append(Rejection(pending[i].identity, why, reason.lower()))
                self.counters["fast_fail_refused"] += len(exc.refused)
                self.counters["fast_fail_resends"] += 1
                pending = [e for i, e in enumerate(pending) if i not in exc.refused]
        raise PermanentError(f"google: members still refused after {MAX_PASSES} resends of one batch")

    def _settle(self, operation: str, answer: dict[str, Any], sent: Sequence[Entry], result: BatchResult) -> None:
        request_id = str(answer.get("requestId") or "")
        failed = self.diagnostics.check(self.client, request_id, operation, len(sent)) if request_id and sent else {}
        for i, entry in enumerate(sent):
            if i in failed:
                reason = failed[i]
                code = reason.removeprefix("PROCESSING_ERROR_REASON_").lower()
                result.rejected.append(Rejection(entry.identity, f"Google did not process the record ({reason})", code))
            else:
                result.accepted.append(entry.identity)

    # -- I/O -----------------------------------------------------------------------------------
    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        self._require_terms()
        result = BatchResult()
        for chunk in chunks(self._entries(members, self._keys(options), result), MAX_MEMBERS):
            sent, answer = self._send(INGEST, self._ingest_body(audience), chunk, result)
            self._settle("ingest", answer, sent, result)
        return result

    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult:
        """Members rebuilt from their identities; removal needs no terms or consent."""
        result = BatchResult()
        entries: list[Entry] = []
        for identity in dict.fromkeys(identities):
            decoded = decode_identity(identity)
            if decoded is None:
                result.rejected.append(Rejection(identity, "not a Google member identity", "bad_identity"))
            else:
                entries.append(Entry(identity, user_data(*decoded)))
        for chunk in chunks(entries, MAX_MEMBERS):
            sent, answer = self._send(REMOVE, self._remove_body(audience), chunk, result)
            self._settle("remove", answer, sent, result)
        return result

    def validate(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        """The ingest requests with ``validateOnly``: what Google would refuse, and nothing changes.
        Only request validation runs; errors Google finds while processing show in a real run's stats."""
        self._require_terms()
        result = BatchResult()
        for chunk in chunks(self._entries(members, self._keys(options), result), MAX_MEMBERS):
            sent, _ = self._send(INGEST, self._ingest_body(audience, validate_only=True), chunk, result)
            result.accepted.extend(e.identity for e in sent)
        return result

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(self.diagnostics.summary())
        if isinstance(self._client, GoogleClient):
            out["token_refreshes"] = self._client.google_auth.refreshes
        return out
