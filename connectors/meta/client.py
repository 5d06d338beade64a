"""Meta Graph API transport: error objects (often HTTP 400) and the X-Business-Use-Case-Usage
header mapped onto the taxonomy by the error table (api-contracts.md §6.3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from connectors.kernel.error_table import ErrorTable, Found, Rule
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.http import HttpConnector

THROTTLE_CODES = frozenset({4, 17, 613, 80003, 80004})
TRANSIENT_CODES = frozenset({1, 2})
#: a throttle answer without a usable estimate still pauses the ad account this long
DEFAULT_THROTTLE_WAIT = 60.0


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


def _graph_error(response: httpx.Response, body: Any) -> Found:
    """A Graph API error object (often with HTTP 400): ``code``, ``error_subcode``, ``message``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return Found(None, "") if response.status_code < 400 else Found(None, response.text[:300])
    sub = as_int(error.get("error_subcode"))
    extra = {"subcode": sub, "transient": error.get("is_transient") is True}
    code = as_int(error.get("code"))
    return Found(str(code), str(error.get("message", "")), extra, shown=f"#{code}" + (f"/{sub}" if sub else ""))


def _sub(value: int) -> Callable[[Found], bool]:
    return lambda found: found.extra.get("subcode") == value


def _throttle_wait(response: httpx.Response, found: Found) -> float:
    return regain_seconds(response) or DEFAULT_THROTTLE_WAIT


ERRORS = ErrorTable(
    "meta",
    [
        Rule(RateLimitedError, code={str(c) for c in THROTTLE_CODES}, wait=_throttle_wait),
        Rule(RetryableError, code={str(c) for c in TRANSIENT_CODES}),
        Rule(RetryableError, when=lambda found: bool(found.extra.get("transient"))),
        Rule(ConfigError, code="190", hint="the access token needs re-authorisation"),
        Rule(
            ConfigError,
            code="100",
            when=_sub(1713230),
            hint="audience upload blocked (flagged audience); resolve it in Audience Manager",
        ),
        Rule(
            ConfigError,
            code={"100", "10", *(str(c) for c in range(200, 300))},
            when=lambda found: found.code != "100" or found.extra.get("subcode") == 33,
            hint="the token needs permission on this ad account and audience",
        ),
        Rule(RetryableError, status=range(500, 600)),
        Rule(
            PermanentError,
            method="DELETE",
            hint="Meta refused the removal; if it keeps refusing, set additive = true on this mapping",
        ),
    ],
    extract=_graph_error,
)


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class MetaClient(HttpConnector):
    """Graph API error objects and the X-Business-Use-Case-Usage header, by the error table."""

    name = "meta"
    errors = ERRORS
    timeout = 120.0
