"""One error taxonomy for every connector.

A connector maps each response to exactly one of these; the retry policy and the sync engine act on
the class, never on vendor codes. Messages must never contain secrets or raw PII: build them from
status codes, vendor error codes and redacted text only.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every connector failure."""

    outcome = "failed"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class RetryableError(ConnectorError):
    """A transient fault (5xx, timeout, reset): retry with backoff."""


class RateLimitedError(RetryableError):
    """The API asked us to slow down; ``wait_seconds`` is its hint when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        wait_seconds: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.wait_seconds = wait_seconds


class PermanentError(ConnectorError):
    """Retrying cannot help (bad request, unknown resource): stop this operation and report."""


class ConfigError(PermanentError):
    """A person must act: credentials, permissions, account set-up."""

    outcome = "needs_attention"


class LongPauseError(RateLimitedError):
    """Throttled for longer than a task may wait: stop now and resume after ``wait_seconds``.

    Waiting inside a Celery task longer than the broker's visibility timeout gets the task
    delivered twice, so long waits become a stored "not before" time instead.
    """


class RejectedMember(Exception):
    """One member the destination refused; recorded with its reason, never retried forever."""


class ContractViolation(Exception):
    """A connector broke the contract the engine relies on (e.g. answered for an identity it was not
    sent). A bug, not a fault of the remote API: the run fails loudly instead of recording it."""
