"""WooCommerce REST v3 transport: credentials, where they may go, the error table, list requests.

Credentials are a consumer key and a consumer secret, carried together in one secret variable as
``ck_…:cs_…`` (the shape of Basic credentials). WooCommerce accepts Basic auth only over HTTPS
(over plain HTTP it wants OAuth 1.0a signatures), so this client never sends them over plain HTTP
except to a loopback host, where the contract emulator runs. Some servers drop the
``Authorization`` header (PHP as CGI); ``query_string_auth`` then sends ``consumer_key`` and
``consumer_secret`` as query parameters, also over HTTPS only.

Every list answer is a JSON array with paging in ``X-WP-Total``/``X-WP-TotalPages`` and ``Link``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Generator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from connectors.kernel.error_table import ErrorTable, Found, Rule, retry_after
from connectors.kernel.errors import ConfigError, ConnectorError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.http import HttpConnector
from connectors.kernel.paginate import PageNumberPaginator, Params
from connectors.kernel.redact import redact
from connectors.kernel.retry import RetryPolicy

log = logging.getLogger(__name__)

API = "/wp-json/wc/v3"
SECRET_VARIABLE = "AUDIENCE_SYNC_WOOCOMMERCE_SECRET"  # noqa: S105 - the variable's name, not its value
#: WordPress caps ``per_page`` at 100 for every collection
MAX_PER_PAGE = 100


class Credentials(NamedTuple):
    key: str
    secret: str


def parse_credentials(value: str | None) -> Credentials:
    """``ck_…:cs_…`` → the pair; the messages never repeat what was given."""
    if not value or not value.strip():
        raise ConfigError(f"woocommerce: no REST API key is configured: set {SECRET_VARIABLE} to 'ck_…:cs_…'")
    key, sep, secret = value.strip().partition(":")
    if not sep or not key.strip() or not secret.strip():
        raise ConfigError(
            f"woocommerce: {SECRET_VARIABLE} must hold the consumer key and the consumer secret "
            "joined by a colon ('ck_…:cs_…')"
        )
    return Credentials(key.strip(), secret.strip())


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address, by name only (a DNS answer is not trusted for this)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_problem(base_url: str) -> str | None:
    """Why credentials must not be sent to ``base_url``, or None when they may be."""
    parts = urlsplit(base_url)
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and is_loopback(parts.hostname or ""):
        return None
    return (
        "base_url must be https:// (the consumer key and secret would cross the network in clear text; "
        "plain http:// is accepted only for a loopback host such as a local emulator)"
    )


class QueryStringAuth(httpx.Auth):
    """``consumer_key``/``consumer_secret`` in the query, for servers that drop ``Authorization``."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        params = {"consumer_key": self._credentials.key, "consumer_secret": self._credentials.secret}
        request.url = request.url.copy_merge_params(params)
        yield request


class SortRefused(PermanentError):
    """The store refused ``orderby=modified`` (WooCommerce before 4.5): the source reads by id instead."""


def _wp_error(response: httpx.Response, body: Any) -> Found:
    """WordPress errors are ``{code, message, data: {status, params}}``; a host or firewall answers HTML."""
    extra: dict[str, Any] = {"retry_after": response.headers.get("Retry-After")}
    if response.status_code < 400:
        return Found(None, "", extra)
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        data = body.get("data")
        params = data.get("params") if isinstance(data, dict) else None
        extra["params"] = params if isinstance(params, dict) else {}
        return Found(body["code"], str(body.get("message") or ""), extra)
    extra["html"] = True
    return Found(None, "the host answered with a page, not the WordPress REST API", extra)


CANNOT_VIEW = (
    "the key's user may not read orders and customers, or no credentials arrived: create a Read key for a "
    "Shop manager or Administrator (WooCommerce > Settings > Advanced > REST API); if the key is right, the "
    "server may drop the Authorization header (set query_string_auth = true, HTTPS only)"
)

ERRORS = ErrorTable(
    "woocommerce",
    [
        Rule(RateLimitedError, status=429, wait=retry_after, hint="the host or its firewall is throttling requests"),
        Rule(RateLimitedError, status=503, when=lambda f: f.extra.get("retry_after") is not None, wait=retry_after),
        Rule(
            ConfigError,
            code="woocommerce_rest_authentication_error",
            hint="check the consumer key and secret (WooCommerce > Settings > Advanced > REST API)",
        ),
        Rule(ConfigError, code=("woocommerce_rest_cannot_view", "rest_forbidden"), hint=CANNOT_VIEW),
        Rule(
            SortRefused,
            status=400,
            code="rest_invalid_param",
            when=lambda f: "orderby" in (f.extra.get("params") or {}),
        ),
        Rule(PermanentError, status=400, code="rest_invalid_param", hint="the store refused a query parameter"),
        Rule(
            ConfigError,
            status=404,
            hint="no WooCommerce REST API at base_url: check the URL, that WooCommerce is active and that "
            "permalinks are not set to 'Plain'",
        ),
        Rule(
            ConfigError,
            status=403,
            when=lambda f: f.code is None,
            hint="the host or its firewall refused the request before WordPress saw it: allow the worker's address",
        ),
    ],
    extract=_wp_error,
)


class WordPressPaginator(PageNumberPaginator):
    """``X-WP-TotalPages``; when a proxy or cache dropped the ``X-WP-*`` headers, the ``Link`` header's
    ``rel="next"``, and without either a full page (``body``, the items) may have a successor."""

    def next(self, params: Params, body: Any, response: httpx.Response) -> Params | None:
        if self.total_pages_header in response.headers:
            return super().next(params, body, response)
        if "next" in response.links or (isinstance(body, list) and len(body) >= self.per_page):
            return {**params, self.page_param: int(params[self.page_param]) + 1}
        return None


class WooCommerceClient(HttpConnector):
    """GETs of WooCommerce collections (JSON arrays), through the kernel's retry and error table."""

    name = "woocommerce"
    errors = ERRORS

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        query_string_auth: bool,
        retry: RetryPolicy,
        client: httpx.Client | None = None,
    ) -> None:
        problem = transport_problem(base_url)
        if problem is not None:
            raise ConfigError(f"woocommerce: {problem}")
        auth: httpx.Auth = (
            QueryStringAuth(credentials) if query_string_auth else httpx.BasicAuth(credentials.key, credentials.secret)
        )
        super().__init__(base_url.rstrip("/") + API, auth=auth, retry=retry, client=client)
        if client is not None:  # a client handed in (tests) still talks to this site, with this auth
            client.base_url = httpx.URL(self.base_url)
            client.auth = auth

    def get_list(self, path: str, params: Params) -> tuple[list[Any], httpx.Response]:
        """One collection page: its items and the answer (for the paging headers), with retries."""

        def attempt() -> tuple[list[Any], httpx.Response]:
            response = self.send_once("GET", path, params=params)
            return self.json_list(response), response

        try:
            return self.retry.call(attempt, self.stats)
        except ConnectorError as exc:
            log.warning("%s GET %s failed: %s", self.name, redact(path), exc.message)
            raise

    def json_list(self, response: httpx.Response) -> list[Any]:
        """A JSON array body. A torn body is retried (proxies cut answers); an HTML page with 200 is a
        wrong base_url, not a fault that passes."""
        text = self.body_text(response)
        if "html" in response.headers.get("Content-Type", "") and text.lstrip().startswith("<"):
            raise ConfigError(
                "woocommerce: base_url answered with a web page, not the REST API: check base_url and that "
                "permalinks are not set to 'Plain'"
            )
        try:
            body = json.loads(text)
        except ValueError:
            raise RetryableError(f"malformed response body: not JSON (HTTP {response.status_code})") from None
        if not isinstance(body, list):
            raise RetryableError(f"unexpected response shape: not a JSON array (HTTP {response.status_code})")
        return body
