"""A declarative error table: which answers are which error of the taxonomy, in one place per vendor.

In the style of Airbyte's error mapping: a vendor says how to read an error out of its answer (an
:data:`Extract`: its code and text, which may sit in a 200 answer, as GraphQL and TikTok put them)
and lists :class:`Rule` rows matched in order; the kernel's rows for plain HTTP come last. Messages are
built from codes and redacted text only, and a rule's ``hint`` says what a person should do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.kernel.errors import ConfigError, ConnectorError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.redact import redact


@dataclass(frozen=True)
class Found:
    """The error an answer carries: the vendor's code (None: no error in a 2xx answer) and its text."""

    code: str | None
    text: str
    #: what the vendor said beyond code and text (a subcode, a quota name), for waits and hints
    extra: dict[str, Any] = field(default_factory=dict)
    #: how the vendor writes the code in its docs (Meta's ``#100/33``), when not the code itself
    shown: str | None = None


Extract = Callable[[httpx.Response, Any], Found]
Wait = Callable[[httpx.Response, Found], float | None]


def retry_after(response: httpx.Response, found: Found | None = None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for these APIs and treated as absent)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content.decode("utf-8", "replace"))
    except ValueError:
        return None


def text_of(response: httpx.Response, body: Any) -> Found:
    """The kernel's reading: no vendor code; the start of the body as text (redacted later)."""
    if response.status_code < 400:
        return Found(None, "")
    return Found(str(response.status_code), response.text[:300])


@dataclass(frozen=True)
class Rule:
    """Answers matching every given field raise ``error`` (``None`` fields match anything)."""

    error: type[ConnectorError]
    status: int | Collection[int] | None = None
    code: str | Collection[str] | None = None
    #: a regex searched in the error's text
    text: str | None = None
    method: str | None = None
    #: any further condition on what was found (a subcode, a flag)
    when: Callable[[Found], bool] | None = None
    hint: str = ""
    #: seconds to wait, for a rate-limit rule (Retry-After, a vendor's refill time)
    wait: Wait | None = None

    def matches(self, response: httpx.Response, found: Found) -> bool:
        status = response.status_code
        if self.status is not None and not (
            status == self.status if isinstance(self.status, int) else status in self.status
        ):
            return False
        if self.code is not None and not (
            found.code == self.code if isinstance(self.code, str) else found.code in self.code
        ):
            return False
        if self.text is not None and not re.search(self.text, found.text, re.IGNORECASE):
            return False
        if self.when is not None and not self.when(found):
            return False
        return self.method is None or response.request.method == self.method


#: plain HTTP, after every vendor's own rows
KERNEL_RULES: tuple[Rule, ...] = (
    Rule(RateLimitedError, status=429, wait=retry_after),
    Rule(ConfigError, status=(401, 403), hint="check the credentials and their permissions"),
    Rule(RetryableError, status=(408, *range(500, 600))),
    Rule(PermanentError, status=range(400, 500)),
)


class ErrorTable:
    """A vendor's rows before the kernel's; :meth:`raise_for` raises the first match, or returns."""

    def __init__(self, vendor: str, rules: Sequence[Rule] = (), extract: Extract = text_of) -> None:
        self.vendor = vendor
        self.rules = (*rules, *KERNEL_RULES)
        self.extract = extract

    def raise_for(self, response: httpx.Response, body: Any = None) -> None:
        status = response.status_code
        found = self.extract(response, body if body is not None else json_or_none(response))
        if status < 400 and found.code is None:
            return
        rule = next((r for r in self.rules if r.matches(response, found)), None)
        if rule is None:  # an error code in a 2xx answer that no row names: refuse, never pass it as ok
            rule = Rule(PermanentError)
        text = redact(found.text).strip()[:300]
        code = found.shown or found.code
        label = f"HTTP {status}" + (f", {code}" if code and code != str(status) else "")
        message = f"{self.vendor}: {text} ({label})" if text else f"{self.vendor}: {response.reason_phrase} ({label})"
        if rule.hint:
            message += f": {rule.hint}"
        if issubclass(rule.error, RateLimitedError):
            wait = rule.wait(response, found) if rule.wait is not None else None
            raise rule.error(message, wait_seconds=wait, status=status, code=found.code)
        raise rule.error(message, status=status, code=found.code)
