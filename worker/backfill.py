"""First pull of a large store by bulk export: start, poll, download, store in chunks, attach lines.

Every step leaves its progress in ``bulk_operations`` before the next begins, so a worker killed
anywhere resumes where its last stored chunk ended: a running export is polled again, a half
downloaded file continues with ``Range``, a half stored file continues at the stored byte offset
(chunks are idempotent upserts), an expired address starts the export again. Line items are staged
and attached to their orders in one transaction once the whole file is read (children may come
before their parent). A FAILED or CANCELED export stores what its partial file holds and leaves
the stream to windowed paging, which then reads everything (a partial file says nothing about
what is missing). After a complete export the stream's watermark is the export's start time, so
the incremental pull that follows re-reads, with its overlap, everything changed since.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from connectors.kernel.bulk import BulkChunk, BulkExport, BulkJob, BulkUrlExpired
from connectors.kernel.errors import ConfigError, PermanentError, RetryableError
from connectors.kernel.records import Page
from connectors.kernel.source import Source
from worker.ingest import Validated, validate_staged_lines
from worker.settings import Settings
from worker.store import Store, utcnow
from worker.store.bulk import BulkRow, rejected_marker

log = logging.getLogger(__name__)

#: the export is still being produced at the source
_WAITING = ("starting", "running")


@dataclass
class BackfillOutcome:
    """Per stream: what the bulk path did (shown in the run row and the pull's summary)."""

    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: stopped at the time budget with work left: a continuation resumes from the stored progress
    more: bool = False

    def busy(self, stream: str) -> bool:
        """The stream's export is not finished: paging it now would read everything twice."""
        return self.streams.get(stream, {}).get("phase") in (
            "starting",
            "running",
            "downloading",
            "ingesting",
            "merging",
        )


def bulk_dir(settings: Settings) -> Path:
    """Where downloaded exports are kept (owner-only): beside a SQLite database, else ``var/bulk``."""
    if settings.bulk_dir is not None:
        return settings.bulk_dir
    url = settings.database_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        return Path(url.removeprefix("sqlite:///")).parent / "bulk"
    return Path("var/bulk")


def file_of(settings: Settings, row: BulkRow) -> Path:
    return bulk_dir(settings) / f"{row.source}-{row.stream}-{row.id}.jsonl"


class Backfill:
    """The bulk path of one pull (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        source: Source,
        export: BulkExport,
        settings: Settings,
        *,
        ingest_page: Callable[[Page], tuple[Validated, list[tuple[str, str]]]],
        report: Callable[[list[tuple[str, str]]], None],
        progress: Callable[[dict[str, Any]], None] | None,
        deadline: float | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.store = store
        self.source = source
        self.export = export
        self.settings = settings
        #: a page through the pull's own path (validate, drop erased people, store): its problems
        self.ingest_page = ingest_page
        self.report = report
        self.progress = progress
        self.deadline = deadline
        self.sleep = sleep
        self.outcome = BackfillOutcome()

    # -- which streams ----------------------------------------------------------------------------
    def rows(self, force: bool) -> list[BulkRow]:
        """The streams to export: those with an unfinished export, and those never pulled (or all,
        forced, unless an unfinished export says an earlier forced backfill is being resumed)."""
        streams = [s for s in self.export.streams if s in self.source.streams]
        active = {s: row for s in streams if (row := self.store.bulk_active(self.source.kind, s)) is not None}
        resuming = bool(active)
        rows = []
        for stream in streams:
            row = active.get(stream)
            fresh = self.store.get_watermark(self.source.kind, stream) is None
            if row is None and (fresh or (force and not resuming)):
                row = self.store.bulk_create(self.source.kind, stream)
            if row is not None:
                rows.append(row)
        return rows

    def run(self, force: bool = False) -> BackfillOutcome:
        rows = {row.stream: row for row in self.rows(force)}
        wait = 1.0
        while rows:
            moved = False
            for stream, row in list(rows.items()):
                try:
                    before = (row.phase, row.ingested, row.downloaded)
                    row = rows[stream] = self.step(row)
                    moved = moved or before != (row.phase, row.ingested, row.downloaded)
                except (ConfigError, RetryableError):
                    raise  # the pull says so (needs attention / retried); the export resumes next time
                except PermanentError as exc:  # refused to start, or answered what cannot be used
                    row = rows[stream] = self.fall_back(row, exc.message)
                self._note(row)
                if row.phase in ("done", "fell_back", "abandoned"):
                    del rows[stream]
                if self._out_of_time():
                    self.outcome.more = bool(rows)
                    return self.outcome
            if rows and not moved:
                self.sleep(wait)
                wait = min(wait * 1.5, self.settings.bulk_poll_max_seconds)
            elif moved:
                wait = 1.0
        return self.outcome

    # -- one step of one stream -------------------------------------------------------------------
    def step(self, row: BulkRow) -> BulkRow:
        if row.phase == "starting":
            return self.start(row)
        if row.phase == "running":
            return self.poll(row)
        if row.phase == "downloading":
            return self.download(row)
        if row.phase == "ingesting":
            return self.ingest(row)
        if row.phase == "merging":
            return self.merge(row)
        return row

    def start(self, row: BulkRow) -> BulkRow:
        job = self.export.start(row.stream)
        log.info("%s %s: bulk export %s started", row.source, row.stream, job.id)
        return self._update(
            row, operation_id=job.id, status=job.status, phase="running", exported_from=job.created_at, error=None
        )

    def poll(self, row: BulkRow) -> BulkRow:
        assert row.operation_id is not None
        job = self.export.check(row.operation_id)
        if job is None or job.status == "EXPIRED":
            return self.restart(row, "the source no longer has the export")
        values: dict[str, Any] = {"status": job.status, "object_count": job.object_count}
        if job.running:
            return self._update(row, **values)
        if job.status == "COMPLETED" and job.url:
            return self._ready(row, job, job.url, partial=False, **values)
        if job.partial_url:  # FAILED or CANCELED with part of the data
            return self._ready(row, job, job.partial_url, partial=True, **values)
        if job.status == "COMPLETED":  # an empty store: nothing to read
            return self._finish(self._update(row, **values), partial=False)
        return self.fall_back(self._update(row, **values), f"bulk export {job.status} ({job.error_code or 'no code'})")

    def download(self, row: BulkRow) -> BulkRow:
        url = row.url
        if url is None:
            return self.restart(row, "no download address stored")
        lifetime = timedelta(seconds=self.export.url_lifetime_seconds)
        if row.url_received_at is not None and utcnow() - row.url_received_at > lifetime:
            return self.restart(row, "the download address expired (seven days)")
        path = file_of(self.settings, row)
        if row.counts.get("file") != str(path.resolve()):  # an erasure finds the file without settings
            row = self._update(row, counts={**row.counts, "file": str(path.resolve())})
        last = [time.monotonic()]

        def note(size: int) -> None:
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                self.store.bulk_update(row.id, downloaded=size)
                if self.progress:
                    self.progress({"stream": row.stream, "bulk": "downloading", "downloaded_bytes": size})

        try:
            size = self.export.download(url, path, note)
        except BulkUrlExpired as exc:
            return self.restart(row, exc.message)
        if row.file_size is not None and size != row.file_size:
            path.unlink(missing_ok=True)
            return self._update(
                row, downloaded=0, error=f"downloaded {size} bytes of {row.file_size}; downloading again"
            )
        return self._update(row, downloaded=size, phase="ingesting")

    def ingest(self, row: BulkRow) -> BulkRow:
        path = file_of(self.settings, row)
        if not path.exists():  # removed (an erasure, a cleanup): fetch it again from the stored address
            return self._update(row, phase="downloading", downloaded=0, ingested=0)
        counts = dict(row.counts)
        for chunk in self.export.read(row.stream, path, row.ingested, self.settings.bulk_chunk_rows):
            self._store(row, chunk, counts)
            row = self._update(row, ingested=chunk.end, counts=counts)
            if self.progress:
                self.progress({"stream": row.stream, "bulk": "storing", **counts})
            if self._out_of_time():
                return row
        return self._update(row, phase="merging")

    def merge(self, row: BulkRow) -> BulkRow:
        counts = dict(row.counts)
        if row.stream == "orders":
            lines, orders, orphans = self.store.merge_bulk_lines(row.id)
            counts.update(lines=lines, orders_with_lines=orders, orphan_lines=orphans)
            if orphans:
                self.report([(f"{row.stream} export", f"{orphans} line items whose order was not stored")])
        row = self._update(row, counts=counts)
        return self._finish(row, partial=row.partial)

    # -- outcomes -----------------------------------------------------------------------------------
    def _ready(self, row: BulkRow, job: BulkJob, url: str, *, partial: bool, **values: Any) -> BulkRow:
        return self._update(
            row,
            url=url,
            url_received_at=utcnow(),
            partial=partial,
            file_size=job.file_size,
            phase="downloading",
            downloaded=0,
            ingested=0,
            **values,
        )

    def _finish(self, row: BulkRow, *, partial: bool) -> BulkRow:
        file_of(self.settings, row).unlink(missing_ok=True)
        if partial:
            message = (
                f"bulk export {row.status}: stored the {row.counts.get('records', 0)} records of its partial "
                "file; paging reads the rest"
            )
            self.report([(f"{row.stream} export", f"warning: {message}")])
            return self._update(row, phase="fell_back", error=message, finished_at=utcnow())
        if row.exported_from is not None:
            self.store.set_watermark(row.source, row.stream, row.exported_from)
        return self._update(row, phase="done", finished_at=utcnow())

    def fall_back(self, row: BulkRow, reason: str) -> BulkRow:
        """No usable export: the stream is paged instead, in this same pull."""
        file_of(self.settings, row).unlink(missing_ok=True)
        self.store.drop_staged_lines(row.id)
        message = f"{reason}; paging instead"
        log.warning("%s %s: %s", row.source, row.stream, message)
        self.report([(f"{row.stream} export", f"warning: {message}")])
        return self._update(row, phase="fell_back", error=message[:500], finished_at=utcnow())

    def restart(self, row: BulkRow, reason: str) -> BulkRow:
        """Run the export again (its address expired, or the source forgot it)."""
        log.info("%s %s: %s; starting the export again", row.source, row.stream, reason)
        file_of(self.settings, row).unlink(missing_ok=True)
        self.store.drop_staged_lines(row.id)
        restarts = int(row.counts.get("restarts", 0)) + 1
        if restarts > 3:
            return self.fall_back(row, f"{reason} (after {restarts - 1} restarts)")
        return self._update(
            row,
            phase="starting",
            operation_id=None,
            url=None,
            downloaded=0,
            ingested=0,
            counts={"restarts": restarts},
            error=reason[:500],
        )

    # -- helpers ----------------------------------------------------------------------------------
    def _store(self, row: BulkRow, chunk: BulkChunk, counts: dict[str, Any]) -> None:
        checked, problems = self.ingest_page(chunk.page)
        lines, bad_lines, line_warnings = validate_staged_lines(chunk.children)
        problems += bad_lines
        # the line items of an order not stored (refused, or of an erased person), before or after it
        # in the file, are not orphans: mark the order
        kept = {r["order_id"] for r in checked.orders}
        dropped = [o.order_id for o in chunk.page.orders if o.order_id not in kept]
        markers = [rejected_marker(ref) for ref in dict.fromkeys([ref for ref, _ in problems] + dropped)]
        self.store.stage_bulk_lines(row.id, lines + markers)
        self.report(problems + [(r, f"warning: {w}") for r, w in checked.warnings + line_warnings])
        records = len(chunk.page.orders) + len(chunk.page.customers)
        counts["records"] = int(counts.get("records", 0)) + records
        counts["staged_lines"] = int(counts.get("staged_lines", 0)) + len(lines)
        counts["problems"] = int(counts.get("problems", 0)) + len(problems)

    def _update(self, row: BulkRow, **values: Any) -> BulkRow:
        self.store.bulk_update(row.id, **values)
        for key, value in values.items():
            setattr(row, key, value)
        return row

    def _note(self, row: BulkRow) -> None:
        self.outcome.streams[row.stream] = {
            "operation": row.operation_id,
            "status": row.status,
            "phase": row.phase,
            "objects": row.object_count,
            "downloaded_bytes": row.downloaded,
            **row.counts,
            **({"error": row.error} if row.error else {}),
        }

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def forget_files(store: Store) -> int:
    """After an erasure: delete every downloaded export (they may hold the person) and make each
    unfinished export fetch and store its file again (storing it again drops erased people)."""
    removed = 0
    for row in store.bulk_history(limit=100):
        name = row.counts.get("file")
        if isinstance(name, str) and Path(name).exists():
            Path(name).unlink(missing_ok=True)
            removed += 1
        if row.phase in ("downloading", "ingesting", "merging"):
            store.bulk_update(row.id, phase="downloading", downloaded=0, ingested=0)
    if removed:
        os.sync()
    return removed
