"""Keep secrets and raw PII out of messages and logs.

Every error message a connector builds passes through :func:`redact`, and :class:`RedactingFilter`
is installed on the root logger by the CLI and the worker as a second line of defence.
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"[\w.%+\-']+@[\w.\-]+\.[^\W\d_]{2,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic|klaviyo-api-key)\s+[A-Za-z0-9._~+/=\-]+")
_KEYVAL = re.compile(
    r"(?i)(access_token|api_key|apikey|token|secret|password|authorization|x-shopify-access-token)"
    r"([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
)
_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
_LONG_SECRET = re.compile(r"\b(shpat|shpca|shppa|pk|sk|EAA)[_A-Za-z0-9\-]{12,}\b")


def redact(text: str) -> str:
    """Return ``text`` with emails, credentials and URL query strings masked."""
    text = _QUERY.sub(r"\1?…", text)
    text = _BEARER.sub(r"\1 ***", text)
    text = _KEYVAL.sub(r"\1\2***", text)
    text = _LONG_SECRET.sub("***", text)
    return _EMAIL.sub("***@***", text)


def mask_email(email: str) -> str:
    """``jane@example.com`` → ``j***@example.com``: enough for a marketer to recognise a sample."""
    local, _, domain = email.partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"


class RedactingFilter(logging.Filter):
    """Rewrites every record's message through :func:`redact` before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


def install_log_redaction() -> None:
    """Attach the filter to the root logger's handlers (and the root itself) once."""
    root = logging.getLogger()
    targets: list[logging.Filterer] = [root, *root.handlers]
    for target in targets:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())
