"""TikTok custom audiences through the Business API Segment API: ``POST segment/mapping/`` adds and deletes
rows of SHA-256 hashed email and phone (CONTRACT.md §2.3, api-contracts.md §7).

The mapping's ``audience`` is a TikTok Partner audience id of the configured advertiser. TikTok says
nothing per row and refuses a whole batch for one bad id, so every row is checked before it is sent and
members without a usable id are rejected unsent. Raw PII never leaves the process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from connectors.kernel.destination import (
    BatchResult,
    Destination,
    DestinationConfig,
    KeyedOptions,
    MappingOptions,
    Rejection,
)
from connectors.kernel.errors import ConfigError, PermanentError
from connectors.kernel.http import HeaderAuth
from connectors.kernel.records import Member
from connectors.kernel.redact import redact
from connectors.kernel.runtime import Runtime
from connectors.tiktok.client import PARTIAL_OK, PII_NOT_HASHED, TikTokClient, as_int
from connectors.tiktok.rows import (
    DEFAULT_KEYS,
    Row,
    TikTokKey,
    decode_identity,
    encode_identity,
    hashed_row,
    id_schema,
    mapping_body,
    problem,
)
from connectors.tiktok.schemas import MAX_MAPPING_ROWS

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://business-api.tiktok.com/open_api/v1.3"
MAPPING_PATH = "/segment/mapping/"
_DIGITS = re.compile(r"[0-9]{1,32}")
ROWS_COUNTER = {"add": "rows_added", "delete": "rows_deleted"}


class TikTokConfig(DestinationConfig):
    type: Literal["tiktok"] = "tiktok"
    base_url: str = DEFAULT_BASE_URL
    #: the advertiser owning the audiences; needed to sync (checked on first use, so a config that
    #: only previews needs none). Our request bucket is per advertiser.
    advertiser_id: str | None = Field(default=None, pattern=r"^[0-9]{1,32}$")
    #: rows per ``segment/mapping`` call: TikTok states no limit we found; 1,000 is our assumption
    batch_size: int = Field(default=MAX_MAPPING_ROWS, ge=1, le=MAX_MAPPING_ROWS)
    #: TikTok's limits depend on the app's tier and are not published: pace conservatively
    requests_per_second: float = Field(default=5.0, gt=0)
    burst: float = Field(default=5.0, ge=1)


class TikTokOptions(KeyedOptions):
    keys_hint: ClassVar[str] = " of EMAIL and PHONE"
    keys: list[TikTokKey] = Field(default_factory=lambda: list(DEFAULT_KEYS))


class TikTokDestination(Destination):
    kind = "tiktok"
    audience_kind = "ads"
    targeting_minimum = ("TikTok", 1000)
    Config = TikTokConfig
    Options = TikTokOptions

    def __init__(self, name: str, config: DestinationConfig, runtime: Runtime) -> None:
        super().__init__(name, config, runtime)
        assert isinstance(config, TikTokConfig)
        self.tt_config = config
        self.batch_size = config.batch_size

    @property
    def advertiser_id(self) -> str:
        if self.tt_config.advertiser_id is None:
            raise ConfigError(f"tiktok: destination {self.name!r} needs advertiser_id (the TikTok advertiser's id)")
        return self.tt_config.advertiser_id

    def build_client(self) -> TikTokClient:
        return TikTokClient(
            self.tt_config.base_url,
            auth=HeaderAuth(self.credential(), "Access-Token", "{}"),
            retry=self.runtime.retry_policy(),
            rate_limiter=self.runtime.rate_limiter(
                f"tiktok:{self.advertiser_id}", self.tt_config.requests_per_second, self.tt_config.burst
            ),
        )

    def _keys(self, options: MappingOptions) -> list[TikTokKey]:
        return self.opts(options, TikTokOptions).keys

    # -- rows (pure) ----------------------------------------------------------------------
    def row(self, member: Member, keys: Sequence[str]) -> Row:
        """One SHA-256 hex value per key, ``""`` where the member has nothing usable."""
        return hashed_row(member, keys, self.runtime.default_phone_region)

    def identity(self, member: Member, options: MappingOptions) -> str:
        keys = self._keys(options)
        return encode_identity(id_schema(keys), self.row(member, keys))

    # -- I/O ------------------------------------------------------------------------------
    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        keys = self._keys(options)
        schema = id_schema(keys)
        result = BatchResult()
        rows: dict[str, Row] = {}
        refused: dict[str, Rejection] = {}
        for member in members:
            row = self.row(member, keys)
            identity = encode_identity(schema, row)
            why = problem(schema, row)
            if why is not None:
                refused.setdefault(identity, Rejection(identity, why, "no_identifier"))
            else:
                rows[identity] = row
        result.rejected.extend(refused.values())
        self._write("add", audience, schema, list(rows.items()), result)
        return result

    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult:
        """Rows are rebuilt from the identities, grouped by the columns they were added with."""
        result = BatchResult()
        groups: dict[tuple[str, ...], dict[str, Row]] = {}
        for identity in dict.fromkeys(identities):
            decoded = decode_identity(identity)
            why = "not a TikTok row identity" if decoded is None else problem(*decoded)
            if decoded is None or why is not None:
                result.rejected.append(Rejection(identity, f"cannot be removed: {why}", "bad_identity"))
                continue
            groups.setdefault(decoded[0], {})[identity] = decoded[1]
        for schema, group in groups.items():
            self._write("delete", audience, schema, list(group.items()), result)
        return result

    def _write(
        self, action: str, audience: str, schema: Sequence[str], rows: Sequence[tuple[str, Row]], result: BatchResult
    ) -> None:
        if not rows:
            return
        if not _DIGITS.fullmatch(audience):
            shown = redact(audience)[:40]
            raise ConfigError(f"tiktok: the mapping's audience must be a TikTok audience id (digits), not {shown!r}")
        for start in range(0, len(rows), self.batch_size):
            self._send(action, audience, schema, rows[start : start + self.batch_size], result)

    def _send(
        self, action: str, audience: str, schema: Sequence[str], rows: Sequence[tuple[str, Row]], result: BatchResult
    ) -> None:
        """One ``segment/mapping`` call (add and delete are set-like, so the HTTP core may replay it).

        Should TikTok still refuse an id we checked (40062), the batch is halved until the refused rows
        are found and rejected, so one row can never block every run of the mapping.
        """
        body = mapping_body(self.advertiser_id, action, schema, [row for _, row in rows], audience)
        try:
            answer = self.client.send_json("POST", MAPPING_PATH, json=body)
        except PermanentError as exc:
            if isinstance(exc, ConfigError) or exc.code != str(PII_NOT_HASHED):
                raise
            self.counters["bisections"] += 1
            if len(rows) == 1:
                reason = "TikTok refused the row's ids as not hashed (40062)"
                result.rejected.append(Rejection(rows[0][0], reason, "not_hashed"))
                return
            middle = len(rows) // 2
            for half in (rows[:middle], rows[middle:]):
                self._send(action, audience, schema, half, result)
            return
        if as_int(answer.get("code")) == PARTIAL_OK:
            # TikTok says some part failed but not which: nothing to reject, so count it and say so
            self.counters["partial_ok"] += 1
            log.warning("tiktok: %s of %d rows answered PARTIAL_OK (request_id %s)", action, len(rows), _rid(answer))
        self.counters["batches"] += 1
        self.counters[ROWS_COUNTER[action]] += len(rows)
        result.accepted.extend(identity for identity, _ in rows)


def _rid(answer: dict[str, Any]) -> str:
    return str(answer.get("request_id") or "?")[:64]
