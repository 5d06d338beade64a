"""Meta Marketing API custom audiences (customer file): multi-key rows, pre-hashed with our rules.

``POST /{audience_id}/users`` adds, ``DELETE`` removes, ``POST /{audience_id}/usersreplace`` swaps
the whole audience in one session. Every value is normalized by :mod:`connectors.kernel.identifiers` and
sent as lowercase SHA-256 hex; raw PII never leaves the process. api-contracts.md §6.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field

from connectors.kernel.destination import (
    BatchResult,
    Destination,
    DestinationConfig,
    KeyedOptions,
    MappingOptions,
    Rejection,
)
from connectors.kernel.errors import PermanentError
from connectors.kernel.http import HeaderAuth
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
from connectors.meta.client import MetaClient, as_int

MetaKey = Literal["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
KEYS: tuple[str, ...] = ("EMAIL", "PHONE", "FN", "LN", "COUNTRY")
DEFAULT_KEYS: tuple[MetaKey, ...] = ("EMAIL", "PHONE")
MAX_ROWS = 10_000
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


class MetaConfig(DestinationConfig):
    type: Literal["meta"] = "meta"
    base_url: str = "https://graph.facebook.com/v25.0"
    #: the ad account owning the audiences: Meta's quotas (and our bucket) are per ad account
    ad_account_id: str | None = None
    requests_per_second: float = Field(default=5.0, gt=0)
    burst: float = Field(default=10.0, ge=1)


class MetaOptions(KeyedOptions):
    keys: list[MetaKey] = Field(default_factory=lambda: list(DEFAULT_KEYS))
    #: never remove (Meta may refuse removals, e.g. from small audiences): adds only
    additive: bool = False


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
        self.reports: list[UploadReport] = []

    def build_client(self) -> MetaClient:
        account = self.meta_config.ad_account_id or self.name
        return MetaClient(
            self.meta_config.base_url,
            auth=HeaderAuth(self.credential()),
            retry=self.runtime.retry_policy(),
            rate_limiter=self.runtime.rate_limiter(
                f"meta:{account}", self.meta_config.requests_per_second, self.meta_config.burst
            ),
        )

    def _opts(self, options: MappingOptions) -> MetaOptions:
        return self.opts(options, MetaOptions)

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
        invalid = as_int(answer.get("num_invalid_entries"))
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
                num_received=as_int(answer.get("num_received")),
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
        out = super().stats()
        out["batches"] = len(self.reports)
        out["num_received"] = sum(r.num_received for r in self.reports)
        out["num_invalid_entries"] = sum(r.num_invalid_entries for r in self.reports)
        out["last_reports"] = [asdict(r) for r in self.reports[-5:]]
        return out
