"""TikTok Business API transport: the ``Access-Token`` header and the ``{code, message, request_id, data}``
envelope mapped onto the taxonomy by the error table (CONTRACT.md §1 and §5, api-contracts.md §7, §8).

TikTok answers its own errors, throttling included, with HTTP 200: only ``code`` tells. Messages carry the
``request_id`` (TikTok support asks for it; it is no secret) and never the token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from connectors.kernel.error_table import ErrorTable, Found, Rule
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.http import HttpConnector

OK = 0
#: "some parts failed", with nothing to say which: counted, logged and taken as accepted (CONTRACT.md §5)
PARTIAL_OK = 20001
PERMISSION_ERROR = 40001
PARAM_ERROR = 40002
INVALID_BATCH_SIZE = 40061
PII_NOT_HASHED = 40062
TOO_MANY_REQUESTS = 40100
#: TikTok sends no wait hint with 40100: wait at least this long, then the policy backs off further
THROTTLE_WAIT = 1.0
#: 61000 (blocked for requesting too often): longer than a task may wait, so the run pauses instead
BLOCKED_WAIT = 600.0
#: a 200 answer without the envelope (a proxy's page): success cannot be confirmed
NO_ENVELOPE = "no_envelope"

AUTH_CODES = frozenset(range(40101, 40132))
ACCOUNT_CODES = frozenset({40003, 40007, 40009, 40013, 40300, 40301, 40302, 41000})
TRANSIENT_CODES = frozenset({40202, 50000, 50002, 53102, 53103, 60001, *range(51000, 51100), *range(52000, 52205)})


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _envelope(response: httpx.Response, body: Any) -> Found:
    """TikTok's envelope: ``code`` 0 (or 20001) in a 2xx answer is success, any other code is the error."""
    if not isinstance(body, dict) or "code" not in body:
        if response.status_code >= 400:
            return Found(None, response.text[:300])
        if isinstance(body, dict):
            return Found(NO_ENVELOPE, "the answer is not a TikTok envelope")
        return Found(None, "")  # not JSON at all: the body parser retries it as torn
    code = as_int(body.get("code"))
    if code in (OK, PARTIAL_OK):
        return Found(None, "" if response.status_code < 400 else response.text[:300])
    request_id = str(body.get("request_id") or "")
    text = str(body.get("message") or "")[:200]
    if request_id:
        text += f" (request_id {request_id[:64]})"
    return Found(str(body.get("code")) if code is None else str(code), text, {"request_id": request_id})


def _codes(*codes: int | frozenset[int]) -> set[str]:
    out: set[str] = set()
    for code in codes:
        out |= {str(c) for c in code} if isinstance(code, frozenset) else {str(code)}
    return out


def _fixed(seconds: float) -> Callable[[httpx.Response, Found], float]:
    return lambda response, found: seconds


ERRORS = ErrorTable(
    "tiktok",
    [
        Rule(RateLimitedError, code=_codes(TOO_MANY_REQUESTS, 40132), wait=_fixed(THROTTLE_WAIT)),
        Rule(RateLimitedError, code="61000", wait=_fixed(BLOCKED_WAIT)),
        Rule(
            ConfigError,
            code="40118",
            hint="this app is not allowlisted for the Segment API: ask a TikTok representative to enable it",
        ),
        Rule(ConfigError, code=_codes(AUTH_CODES), hint="re-authorise the TikTok access token"),
        Rule(
            ConfigError,
            code=str(PERMISSION_ERROR),
            hint="the token may not act for this advertiser: re-authorise it with the advertiser granted",
        ),
        Rule(
            ConfigError,
            code=_codes(PARAM_ERROR, 40007),
            text=r"invalid audience|audience.{0,20}not (exist|found)",
            hint="the mapping's audience is not a Partner audience of this advertiser: check its id and advertiser_id",
        ),
        Rule(ConfigError, code=_codes(ACCOUNT_CODES), hint="check the advertiser account and its access in TikTok"),
        Rule(RetryableError, code=_codes(TRANSIENT_CODES)),
        Rule(RetryableError, code=NO_ENVELOPE),
        Rule(RetryableError, status=range(500, 600)),
        Rule(PermanentError, code=str(INVALID_BATCH_SIZE), hint="lower batch_size for this destination"),
    ],
    extract=_envelope,
)


class TikTokClient(HttpConnector):
    """Envelope codes in HTTP 200 answers, by the error table."""

    name = "tiktok"
    errors = ERRORS
    timeout = 60.0
