"""Meta Marketing API custom audiences (customer file): multi-key rows, pre-hashed with our rules.

``POST /{audience_id}/users`` adds, ``DELETE`` removes, ``POST /{audience_id}/usersreplace`` swaps
the whole audience in one session. Every value is normalized by :mod:`connectors.kernel.identifiers` and
sent as lowercase SHA-256 hex; raw PII never leaves the process. api-contracts.md §6.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator

from connectors.kernel.destination import (
    BatchResult,
    Destination,
    DestinationConfig,
    MappingOptions,
    Rejection,
)
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.http import HttpConnector, default_classify
from connectors.kernel.identifiers import (
    normalize_country,
    normalize_email,
    normalize_name,
    normalize_phone,
    phone_for_platform,
    sha256_hex,
)
from connectors.kernel.records import Member
from connectors.kernel.redact import redact
from connectors.kernel.runtime import Runtime

MetaKey = Literal["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
KEYS: tuple[str, ...] = ("EMAIL", "PHONE", "FN", "LN", "COUNTRY")
DEFAULT_KEYS: tuple[MetaKey, ...] = ("EMAIL", "PHONE")
MAX_ROWS = 10_000
THROTTLE_CODES = frozenset({4, 17, 613, 80003, 80004})
TRANSIENT_CODES = frozenset({1, 2})
#: a throttle answer without a usable estimate still pauses the ad account this long
DEFAULT_THROTTLE_WAIT = 60.0
Row = tuple[str, ...]


def encode_identity(keys: Sequence[str], row: Row) -> str:
    """``EMAIL,PHONE:<sha256>|<sha256>``: enough to rebuild the removal row without the member."""
    return ",".join(keys) + ":" + "|".join(row)


def decode_identity(identity: str) -> tuple[tuple[str, ...], Row] | None:
    schema, sep, values = identity.partition(":")
    keys = tuple(schema.split(","))
    row = tuple(values.split("|"))
    if not sep or len(keys) != len(row) or not all(k in KEYS for k in keys):
        return None
    return keys, row


def regain_seconds(response: httpx.Response) -> float | None:
    """The longest ``estimated_time_to_regain_access`` (minutes) in X-Business-Use-Case-Usage."""
    header = response.headers.get("X-Business-Use-Case-Usage")
    if not header:
        return None
    try:
        usage = json.loads(header)
    except ValueError:
        return None
    minutes = [
        float(entry.get("estimated_time_to_regain_access") or 0)
        for entries in (usage.values() if isinstance(usage, dict) else [])
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    ]
    longest = max(minutes, default=0.0)
    return longest * 60 if longest > 0 else None


class BearerAuth(httpx.Auth):
    """The token goes in a header, never in the URL (where proxies and logs keep it)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class MetaConfig(DestinationConfig):
    type: Literal["meta"] = "meta"
    base_url: str = "https://graph.facebook.com/v25.0"
    #: system-user access token, filled by the worker from AUDIENCE_SYNC_META_ACCESS_TOKEN
    secret: SecretStr | None = None
    #: the ad account owning the audiences: Meta's quotas (and our bucket) are per ad account
    ad_account_id: str | None = None
    requests_per_second: float = Field(default=5.0, gt=0)
    burst: float = Field(default=10.0, ge=1)


class MetaOptions(MappingOptions):
    keys: list[MetaKey] = Field(default_factory=lambda: list(DEFAULT_KEYS))
    #: never remove (Meta may refuse removals, e.g. from small audiences): adds only
    additive: bool = False

    @field_validator("keys")
    @classmethod
    def _distinct(cls, keys: list[MetaKey]) -> list[MetaKey]:
        if not keys or len(set(keys)) != len(keys):
            raise ValueError("keys must be a non-empty list without repeats")
        return keys


class MetaClient(HttpConnector):
    """Maps Graph API error objects (often HTTP 400) and BUC headers onto the taxonomy."""

    name = "meta"
    timeout = 120.0

    def classify(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            default_classify(response)
            return
        code = _int(error.get("code"))
        sub = _int(error.get("error_subcode"))
        tag = f"#{code}" + (f"/{sub}" if sub else "")
        text = f"meta ({tag}): {redact(str(error.get('message', '')))[:200]}"
        status = response.status_code
        wait = regain_seconds(response)
        if code in THROTTLE_CODES:
            raise RateLimitedError(text, wait_seconds=wait or DEFAULT_THROTTLE_WAIT, status=status, code=tag)
        if code in TRANSIENT_CODES or error.get("is_transient") is True:
            raise RetryableError(text, status=status, code=tag)
        if code == 190:
            raise ConfigError(f"{text}: the access token needs re-authorisation", status=status, code=tag)
        if code == 100 and sub == 1713230:
            msg = f"{text}: audience upload blocked (flagged audience); resolve it in Audience Manager"
            raise ConfigError(msg, status=status, code=tag)
        if (code == 100 and sub == 33) or code == 10 or 200 <= code < 300:
            msg = f"{text}: the token needs permission on this ad account and audience"
            raise ConfigError(msg, status=status, code=tag)
        if status >= 500:
            raise RetryableError(text, status=status, code=tag)
        if response.request.method == "DELETE":
            hint = "Meta refused the removal; if it keeps refusing, set additive = true on this mapping"
            raise PermanentError(f"{text}: {hint}", status=status, code=tag)
        raise PermanentError(text, status=status, code=tag)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass
class UploadReport:
    """What Meta said about one request: kept per batch for the run summary."""

    audience: str
    operation: str
    rows: int
    num_received: int
    num_invalid_entries: int
    identified_invalid: int
    session_id: int | None = None


class MetaDestination(Destination):
    kind = "meta"
    audience_kind = "ads"
    batch_size = MAX_ROWS
    supports_replace = True
    targeting_minimum = ("Meta", 100)
    Config = MetaConfig
    Options = MetaOptions

    def __init__(self, name: str, config: DestinationConfig, runtime: Runtime) -> None:
        super().__init__(name, config, runtime)
        assert isinstance(config, MetaConfig)
        self.meta_config = config
        self._client: MetaClient | None = None
        self._client_lock = threading.Lock()
        self.reports: list[UploadReport] = []
        self.counters = {"invalid_unidentified": 0, "bisections": 0}

    @property
    def client(self) -> MetaClient:
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> MetaClient:
        if self.meta_config.secret is None:
            raise ConfigError("meta: no access token (set AUDIENCE_SYNC_META_ACCESS_TOKEN)")
        account = self.meta_config.ad_account_id or self.name
        return MetaClient(
            self.meta_config.base_url,
            auth=BearerAuth(self.meta_config.secret.get_secret_value()),
            retry=self.runtime.retry_policy(),
            rate_limiter=self.runtime.rate_limiter(
                f"meta:{account}", self.meta_config.requests_per_second, self.meta_config.burst
            ),
        )

    @staticmethod
    def _opts(options: MappingOptions) -> MetaOptions:
        assert isinstance(options, MetaOptions)
        return options

    def removes_members(self, options: MappingOptions) -> bool:
        """``additive = true``: the engine sends no removals (but an erased person is removed anyway)."""
        return not self._opts(options).additive

    # -- rows -----------------------------------------------------------------------------
    def row(self, member: Member, keys: Sequence[str]) -> Row:
        """One hashed value per key, ``""`` where we have nothing usable."""
        country = normalize_country(member.country)
        values: dict[str, str | None] = {
            "EMAIL": normalize_email(member.email),
            "FN": normalize_name(member.first_name),
            "LN": normalize_name(member.last_name),
            "COUNTRY": country,
            "PHONE": None,
        }
        if "PHONE" in keys:
            e164 = normalize_phone(member.phone, (country or self.runtime.default_phone_region).upper())
            values["PHONE"] = phone_for_platform(e164, "meta") if e164 else None
        return tuple(sha256_hex(v) if v else "" for v in (values[k] for k in keys))

    def identity(self, member: Member, options: MappingOptions) -> str:
        keys = self._opts(options).keys
        return encode_identity(keys, self.row(member, keys))

    def _rows(self, members: Iterable[Member], keys: Sequence[str], result: BatchResult) -> list[tuple[str, Row]]:
        rows: dict[str, Row] = {}
        for member in members:
            row = self.row(member, keys)
            identity = encode_identity(keys, row)
            if not any(row):
                reason = f"none of {', '.join(keys)} is usable"
                result.rejected.append(Rejection(identity, reason, "no_identifier"))
            else:
                rows[identity] = row
        return list(rows.items())

    # -- I/O ------------------------------------------------------------------------------
    def _upload(
        self,
        method: str,
        audience: str,
        endpoint: str,
        keys: Sequence[str],
        rows: Sequence[tuple[str, Row]],
        result: BatchResult,
        session: dict[str, Any] | None = None,
    ) -> None:
        body: dict[str, Any] = {"payload": {"schema": list(keys), "data": [list(r) for _, r in rows], "is_raw": True}}
        if session is not None:
            body["session"] = session
        answer = self.client.send_json(method, f"/{quote(audience, safe='')}/{endpoint}", json=body)
        samples = answer.get("invalid_entry_samples") or {}
        sample_values = {str(s) for s in samples}
        invalid = _int(answer.get("num_invalid_entries"))
        identified = 0
        unflagged: list[tuple[str, Row]] = []
        for identity, row in rows:
            bad = next((v for v in row if v and v in sample_values), None)
            if bad is None:
                unflagged.append((identity, row))
                continue
            identified += 1
            why = samples.get(bad, "invalid") if isinstance(samples, dict) else "invalid"
            reason = f"Meta counted the row as invalid: {redact(str(why))[:200]}"
            result.rejected.append(Rejection(identity, reason, "invalid_entry"))
        hidden = max(0, invalid - identified)
        if hidden and session is None and unflagged:
            # Meta samples only a few invalid rows: find the others by re-sending halves (adds and
            # removes are idempotent), so the acknowledged state never claims a row Meta refused
            self.counters["bisections"] += 1
            if len(unflagged) == 1:
                result.rejected.append(
                    Rejection(unflagged[0][0], "Meta counted the row as invalid (isolated)", "invalid_entry")
                )
            else:
                middle = len(unflagged) // 2
                for half in (unflagged[:middle], unflagged[middle:]):
                    self._upload(method, audience, endpoint, keys, half, result)
        else:
            result.accepted.extend(identity for identity, _ in unflagged)
            self.counters["invalid_unidentified"] += hidden
        self.reports.append(
            UploadReport(
                audience=audience,
                operation=f"{method} {endpoint}",
                rows=len(rows),
                num_received=_int(answer.get("num_received")),
                num_invalid_entries=invalid,
                identified_invalid=identified,
                session_id=session["session_id"] if session else None,
            )
        )

    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        keys = self._opts(options).keys
        result = BatchResult()
        rows = self._rows(members, keys, result)
        for start in range(0, len(rows), MAX_ROWS):
            self._upload("POST", audience, "users", keys, rows[start : start + MAX_ROWS], result)
        return result

    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult:
        """Rows are rebuilt from the identities, grouped by the key schema they were added with."""
        result = BatchResult()
        groups: dict[tuple[str, ...], dict[str, Row]] = {}
        for identity in identities:
            decoded = decode_identity(identity)
            if decoded is None:
                result.rejected.append(Rejection(identity, "not a Meta row identity", "bad_identity"))
                continue
            groups.setdefault(decoded[0], {})[identity] = decoded[1]
        for keys, group in groups.items():
            rows = list(group.items())
            for start in range(0, len(rows), MAX_ROWS):
                self._upload("DELETE", audience, "users", keys, rows[start : start + MAX_ROWS], result)
        return result

    def replace(self, audience: str, batches: Iterable[Sequence[Member]], options: MappingOptions) -> BatchResult:
        """One usersreplace session; only the final batch (``last_batch_flag``) swaps the audience.

        A failure part-way leaves the audience as it was; restart the whole replace (new session).
        The engine never replaces an additive mapping (a replace removes).
        """
        opts = self._opts(options)
        result = BatchResult()
        total = sum(len(b) for b in batches) if isinstance(batches, Sequence) else None
        chunks = self._row_chunks(batches, opts.keys, result)
        current = next(chunks, None)
        if current is None:
            raise PermanentError("meta: refusing to replace an audience with no usable rows; remove instead")
        session_id = secrets.randbits(62) + 1
        seq = sent = 0
        while current is not None:
            following = next(chunks, None)
            seq += 1
            sent += len(current)
            session = {
                "session_id": session_id,
                "batch_seq": seq,
                "last_batch_flag": following is None,
                "estimated_num_total": total or sent + (len(following) if following else 0),
            }
            self._upload("POST", audience, "usersreplace", opts.keys, current, result, session)
            current = following
        return result

    def _row_chunks(
        self, batches: Iterable[Sequence[Member]], keys: Sequence[str], result: BatchResult
    ) -> Iterator[list[tuple[str, Row]]]:
        pending: list[tuple[str, Row]] = []
        seen: set[str] = set()
        for batch in batches:
            for identity, row in self._rows(batch, keys, result):
                if identity not in seen:
                    seen.add(identity)
                    pending.append((identity, row))
                if len(pending) == MAX_ROWS:
                    yield pending
                    pending = []
        if pending:
            yield pending

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out["batches"] = len(self.reports)
        out["num_received"] = sum(r.num_received for r in self.reports)
        out["num_invalid_entries"] = sum(r.num_invalid_entries for r in self.reports)
        out["last_reports"] = [asdict(r) for r in self.reports[-5:]]
        if self._client is not None:
            s = self._client.stats
            out.update(
                requests=self._client.requests,
                retries=s.retries,
                throttled=s.throttled,
                waited_seconds=s.waited_seconds,
            )
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
