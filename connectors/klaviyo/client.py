"""Klaviyo transport: the pinned revision, ``Klaviyo-API-Key`` auth, JSON:API bodies, JSON:API errors
mapped by the error table, and Klaviyo's per-endpoint rate limits (CONTRACT.md §1, §8, §9).

Klaviyo limits every endpoint separately, per account, in fixed windows: a burst per second and a
steady rate per minute. Each endpoint we call draws from its own shared bucket (``runtime.rate_limiter``,
so every worker using the key shares it), and an answer saying the steady window is spent
(``RateLimit-Remaining: 0``) pauses that endpoint until the window resets, rather than spending a
request on the 429 that would follow.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors.kernel.error_table import ErrorTable, Found, Rule, retry_after
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.http import HeaderAuth, HttpConnector
from connectors.kernel.ratelimit import RateLimiter

#: the API revision we speak, upgraded on purpose (a revision is served for about two years)
REVISION = "2026-07-15"
JSON_API = "application/vnd.api+json"


@dataclass(frozen=True)
class EndpointLimit:
    """A documented limit (``x-klaviyo-ratelimit`` in stable.json): requests per second and per minute."""

    burst: int
    steady: int

    def bucket(self, scale: float = 1.0) -> tuple[float, float]:
        """``(rate, capacity)`` of a token bucket that stays inside both fixed windows: at most
        ``capacity + rate`` requests in any one-second window (≤ burst) and ``capacity + 60 * rate``
        in any minute (≤ steady)."""
        rate = max(self.steady - self.burst, self.steady / 2) / 60
        capacity = max(1.0, self.burst - rate)
        return rate * scale, capacity * scale


#: the operations we call, by method and path, with their spec operation id and limit
ENDPOINTS: tuple[tuple[str, re.Pattern[str], str, EndpointLimit], ...] = tuple(
    (method, re.compile(f"^{pattern}/?$"), op_id, EndpointLimit(burst, steady))
    for method, pattern, op_id, burst, steady in (
        ("POST", r"/api/profile-bulk-import-jobs", "bulk_import_profiles", 10, 150),
        ("GET", r"/api/profile-bulk-import-jobs/[^/]+", "get_bulk_import_profiles_job", 10, 150),
        (
            "GET",
            r"/api/profile-bulk-import-jobs/[^/]+/import-errors",
            "get_errors_for_bulk_import_profiles_job",
            10,
            150,
        ),
        ("GET", r"/api/profiles", "get_profiles", 75, 750),
        ("GET", r"/api/lists/[^/]+", "get_list", 75, 750),
        ("GET", r"/api/lists/[^/]+/profiles", "get_profiles_for_list", 75, 750),
        ("POST", r"/api/lists/[^/]+/relationships/profiles", "add_profiles_to_list", 10, 150),
        ("DELETE", r"/api/lists/[^/]+/relationships/profiles", "remove_profiles_from_list", 10, 150),
        ("GET", r"/api/metrics", "get_metrics", 10, 150),
        ("GET", r"/api/events", "get_events", 350, 3500),
    )
)
#: anything else we might call takes the most common (and strictest listed) limit
OTHER = ("other", EndpointLimit(10, 150))

_LIST_PATH = re.compile(r"^/api/lists/[^/]+(/|$)")
_PROFILE_POINTER = re.compile(r"^/data/\d+/id$")
_AVAILABLE_IN = re.compile(r"available in (\d+) second")


def endpoint(method: str, path: str) -> tuple[str, EndpointLimit]:
    """The spec operation id and limit of ``method path``."""
    bare = urlsplit(path).path
    for m, pattern, op_id, limit in ENDPOINTS:
        if m == method and pattern.match(bare):
            return op_id, limit
    return OTHER


# -- errors ------------------------------------------------------------------------------------------
def _json_api_error(response: httpx.Response, body: Any) -> Found:
    """The first JSON:API error: its ``code``, ``title``/``detail`` as text, and where it points."""
    path = response.request.url.path
    if response.status_code < 400:
        return Found(None, "")
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        html = "html" in response.headers.get("content-type", "") or "cf-mitigated" in response.headers
        return Found(None, "" if html else response.text[:300], {"path": path, "challenge": html})
    first = errors[0]
    source = first.get("source")
    source = source if isinstance(source, dict) else {}
    title, detail = str(first.get("title") or "").strip(), str(first.get("detail") or "").strip()
    text = detail if not title or title == detail else f"{title} {detail}"
    extra = {"path": path, "pointer": str(source.get("pointer") or ""), "parameter": source.get("parameter")}
    code = str(first.get("code") or "").strip() or None
    return Found(code, text, extra)


def throttle_wait(response: httpx.Response, found: Found) -> float:
    """Retry-After (whole seconds), else the detail's "available in N seconds"; never under 1 s,
    since Klaviyo has been seen answering "0 seconds"."""
    wait = retry_after(response)
    if wait is None:
        match = _AVAILABLE_IN.search(found.text)
        wait = float(match.group(1)) if match else 1.0
    return max(1.0, wait)


def _on_list(found: Found) -> bool:
    """A 404 about the list itself (not about a profile id inside the body)."""
    return bool(_LIST_PATH.match(str(found.extra.get("path", "")))) and not _PROFILE_POINTER.match(
        str(found.extra.get("pointer", ""))
    )


ERRORS = ErrorTable(
    "klaviyo",
    [
        Rule(RateLimitedError, status=429, wait=throttle_wait),
        Rule(RetryableError, status=(503, 504, 524)),
        # a Cloudflare challenge page (no JSON:API body) is load shedding, not a permission problem
        Rule(RetryableError, status=403, when=lambda found: bool(found.extra.get("challenge"))),
        Rule(
            ConfigError,
            code=("not_authenticated", "authentication_failed"),
            hint="check AUDIENCE_SYNC_KLAVIYO_API_KEY: it must be a private API key (pk_...) of the account",
        ),
        Rule(
            ConfigError,
            status=403,
            hint="the private key lacks a scope: it needs lists:read, lists:write, profiles:read and "
            "profiles:write (events:read and metrics:read for engagement)",
        ),
        Rule(
            ConfigError,
            status=404,
            text="no valid revisions",
            hint=f"Klaviyo no longer serves revision {REVISION}: upgrade audience-sync",
        ),
        Rule(
            PermanentError,
            status=404,
            when=lambda found: bool(_PROFILE_POINTER.match(str(found.extra.get("pointer", "")))),
        ),
        Rule(
            ConfigError,
            status=404,
            when=_on_list,
            hint="check the mapping's audience: it must be the id of an existing Klaviyo list (e.g. Y6nRLr)",
        ),
    ],
    extract=_json_api_error,
)


def unknown_profile(exc: PermanentError) -> bool:
    """The answer to a membership call naming a profile id Klaviyo does not know (re-resolve the ids)."""
    return exc.status == 404 and exc.code == "not_found"


# -- the client --------------------------------------------------------------------------------------
LimiterFactory = Callable[[str, float, float], RateLimiter]


class KlaviyoClient(HttpConnector):
    """Per-endpoint shared buckets, and a pause when an answer says the steady window is spent."""

    name = "klaviyo"
    errors = ERRORS
    timeout = 60.0

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        limiter: LimiterFactory,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        rate_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        headers = {"revision": REVISION, "Accept": JSON_API}
        super().__init__(
            base_url, headers=headers, auth=HeaderAuth(key, "Authorization", "Klaviyo-API-Key {}"), **kwargs
        )
        self._limiter = limiter
        self._sleep = sleep
        self._clock = clock
        self._scale = rate_scale
        self._buckets: dict[str, RateLimiter] = {}
        self._resume_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def _bucket(self, op_id: str, limit: EndpointLimit) -> RateLimiter:
        with self._lock:
            if op_id not in self._buckets:
                self._buckets[op_id] = self._limiter(op_id, *limit.bucket(self._scale))
            return self._buckets[op_id]

    def _pause_if_spent(self, op_id: str) -> None:
        with self._lock:
            resume = self._resume_at.pop(op_id, None)
        wait = 0.0 if resume is None else resume - self._clock()
        if wait > 0:
            self.stats.waited_seconds += wait
            self._sleep(wait)

    def _note_window(self, op_id: str, response: httpx.Response) -> None:
        """``RateLimit-Remaining: 0`` (steady window) means the next call would be a 429 until ``Reset``."""
        remaining = _leading_int(response.headers.get("RateLimit-Remaining"))
        reset = _leading_int(response.headers.get("RateLimit-Reset"))
        if remaining == 0 and reset is not None:
            with self._lock:
                self._resume_at[op_id] = self._clock() + max(1, reset)

    def send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        op_id, limit = endpoint(method, path)
        self._pause_if_spent(op_id)
        self._bucket(op_id, limit).acquire()
        response = super().send_once(method, path, **kwargs)
        self._note_window(op_id, response)
        return response

    def send_document(self, method: str, path: str, document: dict[str, Any]) -> httpx.Response:
        """Send a JSON:API request body (retried like any request: the calls we make are set-like
        or, for imports, upserts whose replay is harmless)."""
        return self.send(method, path, content=_encode(document), headers={"Content-Type": JSON_API})

    def send_document_for_json(self, method: str, path: str, document: dict[str, Any]) -> dict[str, Any]:
        return self.send_json(method, path, content=_encode(document), headers={"Content-Type": JSON_API})


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _leading_int(value: str | None) -> int | None:
    """The leading integer of a header value (Klaviyo's exact format is not documented)."""
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match else None
