"""Import jobs, their whole life: created (idempotently), read, listed, cancelled by
operators; claimed, run with heartbeats and progress, finished, and queued again when their
worker is lost, by the `imports.*` tasks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from core.cache import Cache
from core.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from core.imports.release import open_job_release, resolve_import_path
from core.imports.writer import Hooks, ImportCancelled, MovieLensImport, ReleaseError
from core.outbound import OutboundRefused, UrlPolicy, check_url
from core.queue import RUN_IMPORT, TaskQueue
from core.settings import Settings
from core.store import Duplicate, Page, Position
from core.store import imports as job_store
from core.store.leases import IMPORT_LEASE, FencedLease, LeaseBusy, LeaseLost
from models import FINISHED, ImportJob, ImportReport, PydanticObjectId, utcnow

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.5  # seconds between progress writes


def _fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


async def create_job(
    *,
    body: dict[str, Any],
    idempotency_key: str | None,
    created_by: PydanticObjectId | None,
    created_by_client: str | None = None,
    import_root: Path,
    url_policy: UrlPolicy,
    queue: TaskQueue,
) -> tuple[ImportJob, bool]:
    """Queue an import for a person or an operator client; the same Idempotency-Key returns
    the same job (True when new). A URL must pass `url_policy` (checked again, with its
    addresses, when the worker downloads it)."""
    fingerprint = _fingerprint(body)
    if idempotency_key is not None:
        existing = await job_store.by_idempotency_key(idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    path = body.get("path")
    if path is not None:
        _, path = resolve_import_path(import_root, path)
    if body.get("url") is not None:
        try:
            check_url(body["url"], url_policy)
        except OutboundRefused as exc:
            raise InvalidInput(str(exc), {"url": [str(exc)]}) from None
    job = ImportJob(
        source=body["source"],
        path=path,
        url=body.get("url"),
        dry_run=body.get("dry_run", False),
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        created_by=created_by,
        created_by_client=created_by_client,
    )
    try:
        await job_store.insert(job)
    except Duplicate:  # the same key, sent twice at once: the other request won
        assert idempotency_key is not None
        existing = await job_store.by_idempotency_key(idempotency_key)
        if existing is None:
            raise
        return _same_request(existing, fingerprint), False
    try:
        await queue.send(RUN_IMPORT, str(job.id))
    except Exception as exc:
        await _finish(job.id, status="failed", error="The job could not be queued.")
        raise ServiceUnavailable("The task queue is unavailable; try again.") from exc
    # Beat sends a queued job again only a while after its last message.
    await job_store.mark_sent([job.id])
    return job, True


def _same_request(job: ImportJob, fingerprint: str) -> ImportJob:
    if job.fingerprint != fingerprint:
        raise Conflict("That Idempotency-Key was used for a different request.")
    return job


async def get_job(*, job_id: PydanticObjectId) -> ImportJob:
    """One import job or NotFound."""
    job = await job_store.get(job_id)
    if job is None:
        raise NotFound("No import job with that id.")
    return job


async def list_jobs(
    *, limit: int, after: Position | None = None, offset: int = 0
) -> Page[ImportJob]:
    """Import jobs, newest first, after `after` (else the first `offset`)."""
    return await job_store.page(after=after, offset=offset, limit=limit)


async def cancel_job(*, job_id: PydanticObjectId) -> ImportJob:
    """Cancel a queued job now, or ask a running one to stop at its next batch."""
    job = await get_job(job_id=job_id)
    if job.status in FINISHED:
        raise Conflict(f"The job has already {job.status}.")
    changed = None
    if job.status == "queued":  # not started: cancelled at once, unless a worker just took it
        changed = await job_store.cancel_queued(job_id)
    if changed is None:  # running: the worker stops at its next batch
        changed = await job_store.request_cancel(job_id)
    if changed is None:
        raise NotFound("No import job with that id.")
    return changed


# ---- running a job (the imports.run task) ---------------------------------------------


class JobBusy(Exception):
    """Another worker is running this job (its heartbeat is fresh): try again later."""


class JobHooks(Hooks):
    """Writes progress and counts to the job document; notices cancellation."""

    def __init__(self, job_id: PydanticObjectId, cache: Cache | None = None) -> None:
        self.job_id = job_id
        self._cache = cache
        self._last = 0.0

    async def _save(self, report: ImportReport, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        await job_store.set_fields(
            self.job_id, {"report": report.model_dump(), "heartbeat_at": utcnow()}
        )

    async def file_started(self, name: str, total: int) -> None:
        self._last = 0.0

    async def advanced(self, name: str, rows: int, report: ImportReport) -> None:
        await self._save(report)

    async def file_finished(self, name: str, report: ImportReport) -> None:
        await self._save(report, force=True)

    async def movies_written(self, *, inserted: list[Any], updated: list[Any]) -> None:
        # Searches and lists show each batch as it lands, not only when the import ends.
        if self._cache is not None:
            await self._cache.movies_changed(updated)

    async def cancelled(self) -> bool:
        return await job_store.cancel_requested(self.job_id)


async def _claim(job_id: PydanticObjectId, stale_after: float) -> ImportJob | None:
    """Mark the job running; None if it has ended. JobBusy if another worker is on it."""
    job = await job_store.get(job_id)
    if job is None or job.status in FINISHED:
        return None
    fresh = utcnow() - timedelta(seconds=stale_after)
    if job.status == "running" and job.heartbeat_at and job.heartbeat_at > fresh:
        raise JobBusy(str(job_id))
    claimed = await job_store.claim(job)
    if claimed is None:
        raise JobBusy(str(job_id))
    return claimed


@asynccontextmanager
async def _heartbeat(job_id: PydanticObjectId, every: float) -> AsyncIterator[None]:
    """Keep heartbeat_at fresh while the job runs, long aggregation steps included."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            await job_store.set_fields(job_id, {"heartbeat_at": utcnow()})

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _finish(job_id: Any, *, status: str, **fields: Any) -> None:
    await job_store.set_fields(job_id, {"status": status, **fields, "finished_at": utcnow()})


async def run_job(
    *,
    job_id: PydanticObjectId,
    settings: Settings,
    cache: Cache | None = None,
) -> str | None:
    """Run (or resume) one import job to its end; returns its final status."""
    job = await _claim(job_id, settings.import_stale_after)
    if job is None:
        return None  # finished or cancelled already: a replayed message
    if job.cancel_requested:
        await _finish(job_id, status="cancelled")
        return "cancelled"
    hooks = JobHooks(job_id, cache)
    importer: MovieLensImport | None = None
    lease = FencedLease(IMPORT_LEASE, holder=f"job:{job_id}", ttl=settings.import_stale_after)
    try:
        async with _heartbeat(job_id, settings.import_stale_after / 4):
            release = await open_job_release(job, settings)
            try:
                importer = MovieLensImport(
                    release,
                    hooks=hooks,
                    dry_run=job.dry_run,
                    batch_size=settings.import_batch_size,
                    prior_votes=settings.rating_prior_votes,
                    drain_settle=settings.drain_settle,
                    job_id=job_id,
                    lease=lease,
                )
                report = await importer.run()
            finally:
                release.close()
    except LeaseBusy as busy:
        # Another import writes: this one waits, queued, and is sent again when that one
        # ends (or by beat's sweep of queued jobs).
        await _wait_behind(job_id, busy.holder)
        return "queued"
    except LeaseLost:
        # This attempt stalled past its lease and another attempt of the job holds it now.
        log.warning("import lease lost; this attempt stops", extra={"job": str(job_id)})
        return None
    except ImportCancelled:
        assert importer is not None
        await _finish(job_id, status="cancelled", report=importer.report.model_dump())
        return "cancelled"
    except (ReleaseError, InvalidInput) as exc:
        # InvalidInput: a path the API accepted that has gone since.
        partial = (importer.report if importer else ImportReport()).model_dump()
        reason = exc.detail if isinstance(exc, InvalidInput) else str(exc)
        await _finish(job_id, status="failed", error=reason, report=partial)
        return "failed"
    await _finish(job_id, status="succeeded", report=report.model_dump(), error=None)
    log.info("import finished", extra={"job": str(job_id), "ratings": report.ratings.inserted})
    return "succeeded"


async def _wait_behind(job_id: PydanticObjectId, holder: str) -> None:
    """Put a claimed job back in the queue behind the import that holds the lease."""
    await job_store.requeue(job_id, waiting_for=holder)
    log.info("import waits for another", extra={"job": str(job_id), "holder": holder})


async def resend_unsent(*, queue: TaskQueue, older_than: float) -> list[str]:
    """Send again the queued jobs whose last message went out `older_than` seconds ago or
    more (lost with a flushed or restarted broker, or parked behind another import): a
    worker claims a job once, so a duplicate message is harmless."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    ids = await job_store.queued_unsent_since(cutoff)
    for job_id in ids:
        await queue.send(RUN_IMPORT, str(job_id))
    if ids:
        await job_store.mark_sent(ids)
    return [str(i) for i in ids]


async def stale_jobs(*, stale_after: float) -> list[str]:
    """Running jobs whose worker stopped reporting: candidates to queue again."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    return [str(i) for i in await job_store.running_quiet_since(cutoff)]
