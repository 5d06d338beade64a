"""The shared HTTP core every connector is built on.

A connector subclass declares its base URL, auth and limits, and its :class:`ErrorTable` (the one place
that maps a vendor's answers to the error taxonomy). Everything else, the client, retries, rate
limiting, redaction and statistics, lives here.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Generator, Mapping
from typing import Any, ClassVar

import httpx

from connectors.kernel.error_table import ErrorTable, retry_after
from connectors.kernel.errors import ConnectorError, RetryableError
from connectors.kernel.ratelimit import ConcurrencyLimiter, RateLimiter, Unlimited
from connectors.kernel.redact import redact
from connectors.kernel.retry import RetryPolicy, RetryStats

log = logging.getLogger(__name__)

USER_AGENT = "audience-sync/0.1 (+https://github.com/audience-sync/audience-sync)"
JSON = dict[str, Any]


def make_client(
    base_url: str,
    *,
    timeout: float = 30.0,
    max_connections: int = 10,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.Client:
    """One way to build clients: explicit timeouts, bounded pool, our user agent."""
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        auth=auth,
    )


retry_after_seconds = retry_after


class HeaderAuth(httpx.Auth):
    """A credential in a header (never in the URL, where proxies and logs keep it), e.g.
    ``HeaderAuth(token)`` for ``Authorization: Bearer …`` or ``HeaderAuth(key, "Access-Token", "{}")``."""

    def __init__(self, token: str, header: str = "Authorization", template: str = "Bearer {}") -> None:
        self._token, self._header, self._template = token, header, template

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._template.format(self._token)
        yield request


class HttpConnector:
    """Base for every HTTP connector: send, classify, retry, rate-limit, count."""

    #: registry name, e.g. ``"shopify"`` or ``"mailchimp"``
    name: ClassVar[str] = ""
    #: the vendor's error rows before the kernel's (plain HTTP statuses)
    errors: ClassVar[ErrorTable] = ErrorTable("http")
    max_connections: ClassVar[int] = 10
    timeout: ClassVar[float] = 30.0

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        concurrency: ConcurrencyLimiter | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or make_client(
            self.base_url,
            timeout=self.timeout,
            max_connections=self.max_connections,
            headers=headers,
            auth=auth,
        )
        self.retry = retry or RetryPolicy()
        self.rate_limiter: RateLimiter = rate_limiter or Unlimited()
        self.concurrency: ConcurrencyLimiter = concurrency or Unlimited()
        self.stats = RetryStats()
        self.requests = 0
        #: findings about answers that were not valid UTF-8 (the source turns them into problems)
        self.encoding_problems: list[str] = []

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def classify(self, response: httpx.Response) -> None:
        """Raise the taxonomy error for ``response`` (by the error table); return for a usable one."""
        self.errors.raise_for(response)

    def request_cost(self, method: str, path: str, body: Any) -> float:
        """Tokens this request takes from the rate limiter (1 by default)."""
        return 1.0

    def send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One attempt: limiter, request, classification. Network faults become RetryableError."""
        self.rate_limiter.acquire(self.request_cost(method, path, kwargs.get("json")))
        self.requests += 1
        with self.concurrency.slot():
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                raise RetryableError(f"{self.name}: timed out ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise RetryableError(f"{self.name}: connection failed ({type(exc).__name__})") from None
        self.classify(response)
        return response

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with the retry policy; raises a :class:`ConnectorError` subclass on failure."""
        try:
            return self.retry.call(lambda: self.send_once(method, path, **kwargs), self.stats)
        except ConnectorError as exc:
            log.warning("%s %s %s failed: %s", self.name, method, redact(path), exc.message)
            raise

    def send_json(self, method: str, path: str, **kwargs: Any) -> JSON:
        """Like :meth:`send`, parsing a JSON object body inside the retry (a torn body is retried)."""
        try:
            return self.retry.call(lambda: self.json_body(self.send_once(method, path, **kwargs)), self.stats)
        except ConnectorError as exc:
            log.warning("%s %s %s failed: %s", self.name, method, redact(path), exc.message)
            raise

    def send_for_json(self, method: str, path: str, **kwargs: Any) -> tuple[JSON, httpx.Response]:
        """Like :meth:`send_json`, also handing back the answer (its headers carry paging, limits)."""

        def attempt() -> tuple[JSON, httpx.Response]:
            response = self.send_once(method, path, **kwargs)
            return self.json_body(response), response

        try:
            return self.retry.call(attempt, self.stats)
        except ConnectorError as exc:
            log.warning("%s %s %s failed: %s", self.name, method, redact(path), exc.message)
            raise

    def send_json_once(self, method: str, path: str, **kwargs: Any) -> JSON:
        """One attempt, no retry: for calls that are not idempotent (a create), whose caller looks
        before it tries again."""
        return self.json_body(self.send_once(method, path, **kwargs))

    def body_text(self, response: httpx.Response) -> str:
        """The body as text. Bytes that are not UTF-8 are reported as what they are (not as a torn
        answer): decoded with U+FFFD in their place, the finding kept in ``encoding_problems``."""
        raw = response.content
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            finding = (
                f"the answer held bytes that are not UTF-8 (first at byte {exc.start} of {len(raw)}); "
                "they were replaced with U+FFFD"
            )
            if finding not in self.encoding_problems:
                self.encoding_problems.append(finding)
            return raw.decode("utf-8", "replace")

    def json_body(self, response: httpx.Response) -> JSON:
        """Parse a JSON object body; a torn or malformed body is a transient fault (proxies truncate)."""
        text = self.body_text(response)
        try:
            body = json.loads(text)
        except ValueError:
            raise RetryableError(f"malformed response body: not JSON (HTTP {response.status_code})") from None
        if not isinstance(body, dict):
            raise RetryableError(f"unexpected response shape: not a JSON object (HTTP {response.status_code})")
        return body


@contextlib.contextmanager
def closing_connector(connector: HttpConnector) -> Any:
    try:
        yield connector
    finally:
        connector.close()
