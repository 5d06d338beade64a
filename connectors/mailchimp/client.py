"""Mailchimp transport: Basic auth with the key, the data centre from the key, problem+json errors
mapped by the error table, and the bare-403 rule (api-contracts.md §3.1, §3.5)."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx

from connectors.kernel.error_table import ErrorTable, Found, Rule
from connectors.kernel.errors import ConfigError, RateLimitedError, RetryableError
from connectors.kernel.http import HttpConnector


def data_centre(api_key: str) -> str:
    """The ``usN`` suffix of an API key; the default host is derived from it."""
    _, sep, dc = api_key.rpartition("-")
    if not sep or not re.fullmatch(r"[a-z]+[0-9]+", dc):
        raise ConfigError("mailchimp: the API key has no data-centre suffix (expected '...-us6')")
    return dc


def _problem(response: httpx.Response, body: Any) -> Found:
    """Mailchimp's problem+json: ``title`` is the code, ``detail`` the text."""
    if response.status_code < 400:
        return Found(None, "")
    if not isinstance(body, dict):
        return Found(None, response.text[:300])
    title = str(body.get("title") or "").strip() or None
    detail = str(body.get("detail") or body.get("error") or "").strip()
    return Found(title, detail or title or "")


ERRORS = ErrorTable(
    "mailchimp",
    [
        Rule(RateLimitedError, status=429),  # Mailchimp sends no Retry-After: the policy backs off
        Rule(
            ConfigError,
            status=404,
            hint="check the mapping's audience: the list id (or segment_id) must exist for this API key",
        ),
        Rule(ConfigError, status=(401, 403), hint="check the API key and its permissions"),
    ],
    extract=_problem,
)


class MailchimpClient(HttpConnector):
    """A bare 403 (no body: load shedding) is retried once, then a config error; the rest by the table."""

    name = "mailchimp"
    errors = ERRORS
    max_connections = 8
    timeout = 120.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()

    def classify(self, response: httpx.Response) -> None:
        if response.status_code == 403 and not response.content.strip():
            seen = getattr(self._local, "bare_403", 0) + 1
            self._local.bare_403 = seen
            if seen <= 1:
                raise RetryableError("mailchimp: bare HTTP 403 (load shedding?); retrying once", status=403)
            self._local.bare_403 = 0
            raise ConfigError("mailchimp: forbidden (HTTP 403, twice): check the API key", status=403)
        self._local.bare_403 = 0
        super().classify(response)
