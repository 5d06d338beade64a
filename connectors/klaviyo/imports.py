"""Profile bulk import jobs for one batch: submitted together, polled together, refused rows read back.

A job is an upsert of the address and names (a null never clears a field, and there is no consent
field at all), sent without ``relationships.lists``: a job's list takes in every row whatever its
consent. Jobs are asynchronous (queued, processing, complete or cancelled), so they are polled with the
runtime's sleep, for a bounded time. Rows Klaviyo refused are listed at ``…/import-errors`` and become
rejections; a replayed POST (an answer lost on the way) makes a second, identical job, which is harmless.
CONTRACT.md §4.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from connectors.kernel.destination import Rejection, chunks
from connectors.kernel.errors import PermanentError, RetryableError
from connectors.kernel.identifiers import normalize_email
from connectors.kernel.paginate import NextLinkPaginator, pages
from connectors.kernel.records import Member
from connectors.kernel.redact import redact
from connectors.klaviyo.client import KlaviyoClient

JOBS = "/api/profile-bulk-import-jobs"
#: rows per job. Klaviyo takes 10,000; we send as many as one list call takes, so a refused job costs
#: fewer rows, and the jobs of one batch (the engine's 10,000) run side by side at Klaviyo
IMPORT_ROWS = 1000
FIRST_POLL = 1.0
POLL_GROWTH = 1.5
MAX_POLL = 15.0
ERRORS_PAGE = 100
_ROW_POINTER = "/data/attributes/profiles/data/"


def import_row(email: str, member: Member) -> dict[str, Any]:
    """One profile of a job: the address and the names we hold (never phone: it is an identifier
    at Klaviyo, and shared numbers would merge people)."""
    attributes: dict[str, Any] = {"email": email}
    for name, value in (("first_name", member.first_name), ("last_name", member.last_name)):
        if value and value.strip():
            attributes[name] = value.strip()
    return {"type": "profile", "attributes": attributes}


def import_document(rows: Sequence[tuple[str, Member]]) -> dict[str, Any]:
    profiles = {"data": [import_row(email, member) for email, member in rows]}
    return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": profiles}}}


class ImportJobs:
    def __init__(
        self, client: KlaviyoClient, sleep: Callable[[float], None], budget_seconds: float, counters: Counter[str]
    ) -> None:
        self.client = client
        self.sleep = sleep
        self.budget = budget_seconds
        self.counters = counters

    def run(self, rows: Sequence[tuple[str, Member]]) -> dict[str, Rejection]:
        """Import ``(normalized email, member)`` rows; the rows Klaviyo refused, by email."""
        jobs: dict[str, list[str]] = {}
        for chunk in chunks(rows, IMPORT_ROWS):
            answer = self.client.send_document_for_json("POST", JOBS, import_document(chunk))
            job_id = (answer.get("data") or {}).get("id")
            if not job_id:
                raise PermanentError("klaviyo: the import job was accepted without a job id (HTTP 202)")
            jobs[str(job_id)] = [email for email, _ in chunk]
        self.counters["import_jobs"] += len(jobs)
        refused: dict[str, Rejection] = {}
        for job_id, attributes in self._finished(list(jobs)).items():
            if int(attributes.get("failed_count") or 0) > 0:
                refused.update(self._refused_rows(job_id, jobs[job_id]))
        self.counters["import_refused"] += len(refused)
        return refused

    def _finished(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each job's attributes once complete. A cancelled job, or one still running when the budget
        is spent, fails the batch: a retryable error, so the next run sends it again."""
        done: dict[str, dict[str, Any]] = {}
        pending, delay, waited = list(job_ids), FIRST_POLL, 0.0
        while pending:
            if waited >= self.budget:
                raise RetryableError(
                    f"klaviyo: {len(pending)} profile import jobs were not complete after {waited:.0f} s; "
                    "the batch is sent again by the next run"
                )
            self.sleep(delay)
            waited += delay
            self.counters["import_polls"] += 1
            delay = min(delay * POLL_GROWTH, MAX_POLL)
            for job_id in list(pending):
                body = self.client.send_json("GET", f"{JOBS}/{quote(job_id, safe='')}")
                attributes = (body.get("data") or {}).get("attributes") or {}
                status = str(attributes.get("status") or "")
                if status == "cancelled":
                    raise RetryableError(f"klaviyo: profile import job {job_id} was cancelled; the batch is sent again")
                if status == "complete":
                    done[job_id] = attributes
                    pending.remove(job_id)
        return done

    def _refused_rows(self, job_id: str, emails: list[str]) -> dict[str, Rejection]:
        refused: dict[str, Rejection] = {}
        path = f"{JOBS}/{quote(job_id, safe='')}/import-errors"
        for body, _ in pages(self.client, path, NextLinkPaginator(), {"page[size]": ERRORS_PAGE}):
            for resource in body.get("data") or []:
                attributes = (resource.get("attributes") if isinstance(resource, dict) else None) or {}
                email = _row_email(attributes, emails)
                if email is None:
                    self.counters["import_errors_unattributed"] += 1
                    continue
                text = redact(str(attributes.get("detail") or attributes.get("title") or "no reason given"))[:300]
                code = "".join(c if c.isalnum() else "_" for c in str(attributes.get("code") or "error").lower())
                refused[email] = Rejection(
                    email, f"Klaviyo refused the profile import: {text}", f"klaviyo_import_{code}"
                )
        return refused


def _row_email(attributes: dict[str, Any], emails: list[str]) -> str | None:
    """Which of the job's rows an import error is about: by its pointer into the body we sent, else
    by the address in the row it echoes back."""
    pointer = str((attributes.get("source") or {}).get("pointer") or "")
    if pointer.startswith(_ROW_POINTER):
        index = pointer[len(_ROW_POINTER) :].split("/", 1)[0]
        if index.isdigit() and int(index) < len(emails):
            return emails[int(index)]
    payload = attributes.get("original_payload") or {}
    echoed = (
        normalize_email(str((payload.get("attributes") or {}).get("email") or ""))
        if isinstance(payload, dict)
        else None
    )
    return echoed if echoed in emails else None
