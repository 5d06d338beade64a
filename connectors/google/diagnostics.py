"""``requestStatus:retrieve`` after a batch: what Google made of it, bounded so processing never stalls a sync.

Google processes an accepted request later and reports per destination: ``PROCESSING``, then
``SUCCESS``, ``PARTIAL_SUCCESS`` or ``FAILED`` with record counts, a match-rate range and per-record
errors by index into the request (CONTRACT.md §10; int64 counts arrive as strings). Google advises
polling after about 30 minutes; a sync cannot wait that long, so each batch gets a few polls with
doubling waits (the runtime's sleep) inside a budget for the whole run. A status still ``PROCESSING``
is reported as such and the members counted as sent. A failure to read the status never fails the
batch: the members were accepted when the request was.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from connectors.kernel.errors import ConnectorError
from connectors.kernel.http import HttpConnector

log = logging.getLogger(__name__)

STATUS_PATH = "/v1/requestStatus:retrieve"
FINAL = frozenset({"SUCCESS", "PARTIAL_SUCCESS", "FAILED"})


@dataclass
class Report:
    """One request as Google reported it (``status`` is ``NOT_CHECKED`` when we did not ask)."""

    request_id: str
    operation: str
    sent: int
    status: str = "NOT_CHECKED"
    polls: int = 0
    record_count: int | None = None
    identifier_count: int | None = None
    match_rate_range: str | None = None
    errors: dict[str, int] = field(default_factory=dict)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_status(report: Report, body: dict[str, Any]) -> dict[int, str]:
    """Fill ``report`` from a retrieve answer (we send one destination per request); the failed record
    indices with their processing error reason."""
    entries = body.get("requestStatusPerDestination") or []
    entry = entries[0] if entries and isinstance(entries[0], dict) else {}
    report.status = str(entry.get("requestStatus") or "REQUEST_STATUS_UNKNOWN")
    branch = entry.get("audienceMembersIngestionStatus") or entry.get("audienceMembersRemovalStatus") or {}
    counts = next((v for v in branch.values() if isinstance(v, dict)), {}) if isinstance(branch, dict) else {}
    report.record_count = _int(counts.get("recordCount"))
    report.identifier_count = _int(counts.get("userIdentifierCount"))
    report.match_rate_range = counts.get("uploadMatchRateRange")
    failed: dict[int, str] = {}
    for count in (entry.get("errorInfo") or {}).get("errorCounts") or []:
        reason = str(count.get("reason") or "PROCESSING_ERROR_REASON_UNSPECIFIED")
        report.errors[reason] = report.errors.get(reason, 0) + (_int(count.get("recordCount")) or 0)
        for index in count.get("recordIndices") or []:
            if _int(index) is not None:
                failed.setdefault(int(index), reason)
    return failed


class Diagnostics:
    """Polls request statuses within ``budget`` seconds of waiting per run, and keeps the reports."""

    def __init__(self, sleep: Callable[[float], None], *, polls: int, first_wait: float, budget: float) -> None:
        self.sleep = sleep
        self.polls = polls
        self.first_wait = first_wait
        self.budget = budget
        self.waited = 0.0
        self.reports: list[Report] = []

    def check(self, client: HttpConnector, request_id: str, operation: str, sent: int) -> dict[int, str]:
        """Poll ``request_id`` until final, out of polls or out of budget; the failed record indices."""
        report = Report(request_id, operation, sent)
        self.reports.append(report)
        wait = self.first_wait
        for _ in range(self.polls):
            if self.waited + wait > self.budget:
                break
            self.sleep(wait)
            self.waited += wait
            wait *= 2
            report.polls += 1
            try:
                body = client.send_json("GET", STATUS_PATH, params={"requestId": request_id})
            except ConnectorError as exc:
                log.warning("google: the status of a %s request could not be read: %s", operation, exc.message)
                report.status = "UNREADABLE"
                return {}
            failed = read_status(report, body)
            if report.status in FINAL:
                return {i: r for i, r in failed.items() if 0 <= i < sent}
        return {}

    def summary(self, last: int = 5) -> dict[str, Any]:
        """For ``stats()``: statuses, record counts, match-rate ranges and processing errors."""
        statuses = Counter(r.status for r in self.reports)
        ranges = Counter(r.match_rate_range for r in self.reports if r.match_rate_range)
        errors: Counter[str] = Counter()
        for r in self.reports:
            errors.update(r.errors)
        return {
            "request_statuses": dict(statuses),
            "records_reported": sum(r.record_count or 0 for r in self.reports),
            "match_rate_ranges": dict(ranges),
            "processing_errors": dict(errors),
            "status_wait_seconds": round(self.waited, 3),
            "last_requests": [asdict(r) for r in self.reports[-last:]],
        }
