"""Import jobs, their whole life: created (idempotently), read, listed, cancelled by
operators; claimed, run with heartbeats and progress, finished, and queued again when their
worker is lost, by the `imports.*` tasks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId, SortDirection
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
from core.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from core.outbound import OutboundRefused, UrlPolicy, check_url
from core.queue import RUN_IMPORT, TaskQueue
from core.services import Page, Position, Sort, keyset_page
from core.services.leases import IMPORT_LEASE, FencedLease, LeaseBusy, LeaseLost
from core.services.movielens import (
    Hooks,
    ImportCancelled,
    MovieLensImport,
    Release,
    ReleaseError,
)
from core.settings import Settings
from models import FINISHED, ImportJob, ImportReport, utcnow

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.5  # seconds between progress writes
# Opens the dataset a job names (the readers live in `seed`; the worker passes one in).
OpenRelease = Callable[[ImportJob, Settings], Awaitable[Release]]


def resolve_import_path(root: Path, raw: str) -> tuple[Path, str]:
    """(absolute path, path relative to the import root); anything escaping it is refused."""
    base = root.resolve()
    if "\x00" in raw:
        raise InvalidInput("The path must not contain a NUL character.", {"path": ["Not allowed."]})
    try:
        candidate = (base / raw).resolve()  # an absolute `raw` replaces base: checked below
    except (OSError, ValueError):
        raise InvalidInput("The path cannot be used.", {"path": ["Not allowed."]}) from None
    if not candidate.is_relative_to(base):
        raise InvalidInput("The path must stay inside the import root.", {"path": ["Not allowed."]})
    if not candidate.exists():
        raise InvalidInput("Nothing exists at that path.", {"path": ["Not found."]})
    return candidate, str(candidate.relative_to(base))


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
        existing = await ImportJob.find_one({"idempotency_key": idempotency_key})
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
        await job.insert()
    except DuplicateKeyError:  # the same key, sent twice at once: the other request won
        existing = await ImportJob.find_one({"idempotency_key": idempotency_key})
        if existing is None:
            raise
        return _same_request(existing, fingerprint), False
    try:
        await queue.send(RUN_IMPORT, str(job.id))
    except Exception as exc:
        await _finish(job.id, status="failed", error="The job could not be queued.")
        raise ServiceUnavailable("The task queue is unavailable; try again.") from exc
    await _mark_sent([job.id])
    return job, True


async def _mark_sent(job_ids: list[Any]) -> None:
    """Note when a job's message was (re)sent: beat sends again only after a while."""
    await ImportJob.get_motor_collection().update_many(
        {"_id": {"$in": job_ids}}, {"$set": {"sent_at": utcnow()}}
    )


def _same_request(job: ImportJob, fingerprint: str) -> ImportJob:
    if job.fingerprint != fingerprint:
        raise Conflict("That Idempotency-Key was used for a different request.")
    return job


async def get_job(*, job_id: PydanticObjectId) -> ImportJob:
    """One import job or NotFound."""
    job = await ImportJob.get(job_id)
    if job is None:
        raise NotFound("No import job with that id.")
    return job


NEWEST_FIRST: Sort = [("created_at", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)]


async def _find(flt: dict[str, Any], sort: Sort, skip: int, limit: int) -> list[ImportJob]:
    return await ImportJob.find(flt).sort(sort).skip(skip).limit(limit).to_list()


async def list_jobs(
    *, limit: int, after: Position | None = None, offset: int = 0
) -> Page[ImportJob]:
    """Import jobs, newest first, after `after` (else the first `offset`)."""
    return await keyset_page(
        _find, flt={}, sort=NEWEST_FIRST, after=after, offset=offset, limit=limit,
        position=lambda job: (job.created_at, job.id),
    )  # fmt: skip


async def cancel_job(*, job_id: PydanticObjectId) -> ImportJob:
    """Cancel a queued job now, or ask a running one to stop at its next batch."""
    job = await get_job(job_id=job_id)
    if job.status in FINISHED:
        raise Conflict(f"The job has already {job.status}.")
    collection = ImportJob.get_motor_collection()
    doc = None
    if job.status == "queued":  # not started: cancelled at once, unless a worker just took it
        doc = await collection.find_one_and_update(
            {"_id": job_id, "status": "queued"},
            {"$set": {"cancel_requested": True, "status": "cancelled", "finished_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
        )
    if doc is None:  # running: the worker stops at its next batch
        doc = await collection.find_one_and_update(
            {"_id": job_id},
            {"$set": {"cancel_requested": True}},
            return_document=ReturnDocument.AFTER,
        )
    return ImportJob.model_validate(doc)


# ---- running a job (the imports.run task) ---------------------------------------------


class JobBusy(Exception):
    """Another worker is running this job (its heartbeat is fresh): try again later."""


class JobHooks(Hooks):
    """Writes progress and counts to the job document; notices cancellation."""

    def __init__(self, job_id: PydanticObjectId, cache: Cache | None = None) -> None:
        self.job_id = job_id
        self._cache = cache
        self._collection = ImportJob.get_motor_collection()
        self._last = 0.0

    async def _save(self, report: ImportReport, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        await self._collection.update_one(
            {"_id": self.job_id},
            {"$set": {"report": report.model_dump(), "heartbeat_at": utcnow()}},
        )

    async def file_started(self, name: str, total: int) -> None:
        self._last = 0.0

    async def advanced(self, name: str, rows: int, report: ImportReport) -> None:
        await self._save(report)

    async def file_finished(self, name: str, report: ImportReport) -> None:
        await self._save(report, force=True)

    async def movies_written(self, *, inserted: list[ObjectId], updated: list[ObjectId]) -> None:
        # Searches and lists show each batch as it lands, not only when the import ends.
        if self._cache is not None:
            await self._cache.catalogue_grew(updated)

    async def cancelled(self) -> bool:
        doc = await self._collection.find_one({"_id": self.job_id}, {"cancel_requested": 1})
        return bool(doc is None or doc.get("cancel_requested"))


async def _claim(job_id: PydanticObjectId, stale_after: float) -> ImportJob | None:
    """Mark the job running; None if it has ended. JobBusy if another worker is on it."""
    collection = ImportJob.get_motor_collection()
    job = await ImportJob.get(job_id)
    if job is None or job.status in FINISHED:
        return None
    fresh = utcnow() - timedelta(seconds=stale_after)
    if job.status == "running" and job.heartbeat_at and job.heartbeat_at > fresh:
        raise JobBusy(str(job_id))
    # Compare-and-set on the status and heartbeat we saw: two redeliveries cannot both win.
    doc = await collection.find_one_and_update(
        {"_id": job_id, "status": job.status, "heartbeat_at": job.heartbeat_at},
        {
            "$set": {
                "status": "running",
                "waiting_for": None,
                "worker": f"{socket.gethostname()}:{os.getpid()}",
                "heartbeat_at": utcnow(),
                "started_at": job.started_at or utcnow(),
            },
            "$inc": {"attempts": 1},
        },
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise JobBusy(str(job_id))
    return ImportJob.model_validate(doc)


@asynccontextmanager
async def _heartbeat(job_id: PydanticObjectId, every: float) -> AsyncIterator[None]:
    """Keep heartbeat_at fresh while the job runs, long aggregation steps included."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            await ImportJob.get_motor_collection().update_one(
                {"_id": job_id}, {"$set": {"heartbeat_at": utcnow()}}
            )

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _finish(job_id: Any, *, status: str, **fields: Any) -> None:
    await ImportJob.get_motor_collection().update_one(
        {"_id": job_id}, {"$set": {"status": status, **fields, "finished_at": utcnow()}}
    )


async def run_job(
    *,
    job_id: PydanticObjectId,
    settings: Settings,
    open_release: OpenRelease,
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
            release = await open_release(job, settings)
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
    await ImportJob.get_motor_collection().update_one(
        {"_id": job_id, "status": "running"},
        {
            "$set": {"status": "queued", "waiting_for": holder, "heartbeat_at": None},
            "$inc": {"attempts": -1},  # waiting is not an attempt
        },
    )
    log.info("import waits for another", extra={"job": str(job_id), "holder": holder})


async def resend_unsent(*, queue: TaskQueue, older_than: float) -> list[str]:
    """Send again the queued jobs whose last message went out `older_than` seconds ago or
    more (lost with a flushed or restarted broker, or parked behind another import): a
    worker claims a job once, so a duplicate message is harmless."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    cursor = ImportJob.get_motor_collection().find(
        {"status": "queued", "sent_at": {"$not": {"$gt": cutoff}}}, {"_id": 1}
    )
    ids = [doc["_id"] async for doc in cursor]
    for job_id in ids:
        await queue.send(RUN_IMPORT, str(job_id))
    if ids:
        await _mark_sent(ids)
    return [str(i) for i in ids]


async def stale_jobs(*, stale_after: float) -> list[str]:
    """Running jobs whose worker stopped reporting: candidates to queue again."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    cursor = ImportJob.get_motor_collection().find(
        {"status": "running", "heartbeat_at": {"$lt": cutoff}}, {"_id": 1}
    )
    return [str(doc["_id"]) async for doc in cursor]
