"""Keep secrets and raw PII out of messages and logs.

Every error message a connector builds passes through :func:`redact`, and :class:`RedactingFilter`
is installed on the root logger by the CLI and the worker as a second line of defence.
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"[\w.%+\-']+@[\w.\-]+\.[^\W\d_]{2,}")
#: an address percent-encoded in a URL path (``/mappings/jane%40example.com``)
_ENCODED_EMAIL = re.compile(r"(?i)[\w.%+\-']+%40[\w.\-]+\.[a-z]{2,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic|klaviyo-api-key)\s+[A-Za-z0-9._~+/=\-]+")
_KEYVAL = re.compile(
    r"(?i)(access_token|api_key|apikey|token|secret|password|authorization|x-shopify-access-token)"
    r"([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
)
_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
#: a request line's query string (``GET /status?token=… HTTP/1.1`` in an access log)
_PATH_QUERY = re.compile(r"((?:^|[\s\"'])/[^\s?\"']*)\?[^\s\"']*")
_LONG_SECRET = re.compile(r"\b(shpat|shpca|shppa|pk|sk|EAA)[_A-Za-z0-9\-]{12,}\b")


def redact(text: str) -> str:
    """Return ``text`` with emails, credentials and URL query strings masked."""
    text = _QUERY.sub(r"\1?…", text)
    text = _PATH_QUERY.sub(r"\1?…", text)
    text = _BEARER.sub(r"\1 ***", text)
    text = _KEYVAL.sub(r"\1\2***", text)
    text = _LONG_SECRET.sub("***", text)
    text = _ENCODED_EMAIL.sub("***@***", text)
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


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted line, tracebacks and exception texts included (a filter only
    sees the message), so nothing a handler writes escapes redaction."""

    def __init__(self, inner: logging.Formatter | None = None, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record) if self.inner is not None else super().format(record)
        return redact(text)


def redact_handler(handler: logging.Handler) -> None:
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
    if not isinstance(handler.formatter, RedactingFormatter):
        handler.setFormatter(RedactingFormatter(handler.formatter or logging.Formatter()))


def install_log_redaction(*loggers: str) -> None:
    """Redact every handler of the root logger and of ``loggers`` (e.g. uvicorn's), once each."""
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for f in root.filters):
        root.addFilter(RedactingFilter())
    for logger in [root, *(logging.getLogger(name) for name in loggers)]:
        for handler in logger.handlers:
            redact_handler(handler)
