"""OAuth2 for the Data Manager API, through google-auth only (CONTRACT.md §3).

The secret (``AUDIENCE_SYNC_GOOGLE_CREDENTIALS``) is google-auth credentials info as **JSON text**:
a service-account key (``"type": "service_account"``, the file the Cloud console downloads) or an
authorized user (``"type": "authorized_user"``: client id, client secret and refresh token, as
``gcloud auth application-default login`` writes it). It is never a file path: every vendor's
secret comes from the environment or the ``.env`` file, and a key file read from disk would be a
second, unaudited home for it. Put the file's contents in the variable (``VAR="$(cat key.json)"``).

google-auth builds and signs every grant (the service-account JWT included) and decides when a
token is stale (3 min 45 s before it expires), so tokens are refreshed before expiry; a 401 anyway
(revoked early, clock skew) refreshes once more. Token requests go through :class:`TokenTransport`,
which turns a throttled or failing token endpoint (429, 5xx, a reset, a torn body) into retryable
taxonomy errors: the connector's retry policy retries them with the runtime's sleep, never
google-auth's own sleeping back-off. A refused grant is a :class:`ConfigError` naming the OAuth
error code, never the credential.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from google.auth import exceptions, transport
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from connectors.google.discovery import SCOPE
from connectors.kernel.error_table import ErrorTable, json_or_none
from connectors.kernel.errors import ConfigError, ConnectorError, RetryableError
from connectors.kernel.http import USER_AGENT
from connectors.kernel.redact import redact

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
_REQUIRED = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
}
_HINTS = {
    "invalid_grant": "the refresh token was revoked or expired, or the service-account key was deleted; "
    "create new credentials",
    "invalid_client": "the OAuth client id or secret is wrong",
    "invalid_scope": f"the credentials were not authorized for {SCOPE}",
    "unauthorized_client": "the OAuth client may not use this grant",
}
_CODE = re.compile(r"^[a-z_]{1,40}$")


class TokenSource(Protocol):
    """What we use of google-auth's credentials (the library's classes are not annotated)."""

    token: str | None

    @property
    def valid(self) -> bool: ...

    def refresh(self, request: transport.Request) -> None: ...

    def apply(self, headers: dict[str, str], token: str | None = None) -> None: ...


@dataclass(frozen=True)
class Loaded:
    credentials: TokenSource
    #: a fingerprint of the Cloud project whose quota the requests count against (for the rate limiter)
    quota_key: str


def is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_credentials(
    secret: str, *, variable: str, token_uri: str | None = None, quota_project: str | None = None
) -> Loaded:
    """google-auth credentials for the datamanager scope from credentials info (JSON text)."""
    text = secret.strip()
    if not text.startswith("{"):
        raise ConfigError(
            f"google: {variable} must hold the credentials JSON itself (a service-account key or authorized-user "
            "info), not a file path or a bare token; put the file's contents in it"
        )
    try:
        info = json.loads(text)
    except ValueError:
        raise ConfigError(f"google: {variable} is not valid JSON") from None
    kind = str(info.get("type", "")) if isinstance(info, dict) else ""
    if kind not in _REQUIRED:
        shown = repr(kind) if _CODE.match(kind) else "unknown"
        raise ConfigError(
            f"google: credentials of type {shown} are not supported; use a service_account key or authorized_user info"
        )
    missing = [name for name in _REQUIRED[kind] if not info.get(name)]
    if missing:
        raise ConfigError(f"google: the {kind} credentials lack {', '.join(missing)}")
    try:
        if kind == "service_account":
            built: Any = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
        else:  # from_authorized_user_info always sets Google's token_uri; an override is applied below
            built = user_credentials.Credentials.from_authorized_user_info(info, scopes=[SCOPE])  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, exceptions.GoogleAuthError) as exc:
        raise ConfigError(f"google: the {kind} credentials could not be read ({type(exc).__name__})") from None
    if token_uri:
        built = built.with_token_uri(token_uri)
    if quota_project:
        built = built.with_quota_project(quota_project)
    project = str(info.get("project_id") or info.get("quota_project_id") or info.get("client_id") or "")
    return Loaded(built, hashlib.sha256((quota_project or project).encode()).hexdigest()[:16])


class _Answer(transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class TokenTransport(transport.Request):
    """google-auth's HTTP transport over httpx, raising the taxonomy's retryable errors itself."""

    def __init__(self, errors: ErrorTable, timeout: float = 30.0) -> None:
        self.errors = errors
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), headers={"User-Agent": USER_AGENT})
        self.requests = 0

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> transport.Response:
        self.requests += 1
        try:
            response = self.client.request(method, url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise RetryableError("google: the token endpoint timed out") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"google: the token endpoint could not be reached ({type(exc).__name__})") from None
        status = response.status_code
        if status in (408, 429) or status >= 500:
            self.errors.raise_for(response)
        if status == 200 and not isinstance(json_or_none(response), dict):
            raise RetryableError("google: the token endpoint's answer was not JSON (torn?)", status=200)
        return _Answer(response)

    def close(self) -> None:
        self.client.close()


def refusal(exc: exceptions.RefreshError) -> ConnectorError:
    """A refused grant as a config error (or retryable, when google-auth says so), without the secret."""
    data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    code = str(data.get("error", ""))
    code = code if _CODE.match(code) else "refused"
    described = redact(str(data.get("error_description", "")))[:160]
    detail = f"{code}: {described}" if described else code
    if exc.retryable:
        return RetryableError(f"google: the token endpoint failed ({detail})", code=code)
    hint = _HINTS.get(code, "check the credentials")
    return ConfigError(f"google: the token endpoint refused the credentials ({detail}): {hint}", code=code)


class GoogleAuth(httpx.Auth):
    """Bearer tokens from google-auth credentials, refreshed when stale and once more on a 401."""

    def __init__(self, credentials: TokenSource, transport: TokenTransport) -> None:
        self.credentials = credentials
        self.transport = transport
        self.refreshes = 0
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        used = self._authorize(request, rejected=None)
        response = yield request
        if response.status_code == 401:
            self._authorize(request, rejected=used)
            yield request

    def _authorize(self, request: httpx.Request, rejected: str | None) -> str | None:
        """Put a fresh token on ``request``; ``rejected`` is a token the API refused (refreshed unless
        another request already did)."""
        with self._lock:
            creds = self.credentials
            if not creds.valid or (rejected is not None and creds.token == rejected):
                try:
                    creds.refresh(self.transport)
                except exceptions.RefreshError as exc:
                    raise refusal(exc) from None
                self.refreshes += 1
            headers: dict[str, str] = {}
            creds.apply(headers)
            token = creds.token
        request.headers.update(headers)
        return token

    def close(self) -> None:
        self.transport.close()
