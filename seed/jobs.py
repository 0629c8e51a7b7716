"""Running an import job: what the `imports.run` task does with a job id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId
from pymongo import ReturnDocument

from api.errors import InvalidInput
from api.services.imports import resolve_import_path
from api.settings import Settings
from models import FINISHED, ImportJob, utcnow
from seed.download import DownloadError, fetch
from seed.movielens import Hooks, ImportCancelled, ImportReport, MovieLensImport
from seed.source import Source, SourceError

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.5  # seconds between progress writes


class JobBusy(Exception):
    """Another worker is running this job (its heartbeat is fresh): try again later."""


class JobHooks(Hooks):
    """Writes progress and counts to the job document; notices cancellation."""

    def __init__(self, job_id: PydanticObjectId) -> None:
        self.job_id = job_id
        self._collection = ImportJob.get_motor_collection()
        self._last = 0.0

    async def _save(self, report: ImportReport, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        await self._collection.update_one(
            {"_id": self.job_id},
            {"$set": {"report": report.as_dict(), "heartbeat_at": utcnow()}},
        )

    async def file_started(self, name: str, total: int) -> None:
        self._last = 0.0

    async def advanced(self, name: str, rows: int, report: ImportReport) -> None:
        await self._save(report)

    async def file_finished(self, name: str, report: ImportReport) -> None:
        await self._save(report, force=True)

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


async def _finish(job_id: Any, **fields: Any) -> None:
    await ImportJob.get_motor_collection().update_one(
        {"_id": job_id}, {"$set": {**fields, "finished_at": utcnow()}}
    )


async def _dataset(job: ImportJob, settings: Settings) -> Path:
    if job.url:
        return await asyncio.to_thread(
            fetch, job.url, cache_dir=settings.cache_dir, require_checksum=False, progress=False
        )
    return resolve_import_path(settings.imports_dir, job.path or "")[0]


async def run_job(*, job_id: PydanticObjectId, settings: Settings) -> str | None:
    """Run (or resume) one import job to its end; returns its final status."""
    job = await _claim(job_id, settings.import_stale_after)
    if job is None:
        return None  # finished or cancelled already: a replayed message
    if job.cancel_requested:
        await _finish(job_id, status="cancelled")
        return "cancelled"
    hooks = JobHooks(job_id)
    importer: MovieLensImport | None = None
    try:
        async with _heartbeat(job_id, settings.import_stale_after / 4):
            source = Source(await _dataset(job, settings))
            try:
                importer = MovieLensImport(
                    source,
                    hooks=hooks,
                    dry_run=job.dry_run,
                    batch_size=settings.import_batch_size,
                    prior_votes=settings.rating_prior_votes,
                )
                report = await importer.run()
            finally:
                source.close()
    except ImportCancelled:
        assert importer is not None
        await _finish(job_id, status="cancelled", report=importer.report.as_dict())
        return "cancelled"
    except (SourceError, DownloadError, InvalidInput) as exc:
        # InvalidInput: a path the API accepted that has gone since.
        partial = importer.report.as_dict() if importer else {}
        reason = exc.detail if isinstance(exc, InvalidInput) else str(exc)
        await _finish(job_id, status="failed", error=reason, report=partial)
        return "failed"
    await _finish(job_id, status="succeeded", report=report.as_dict(), error=None)
    log.info("import finished", extra={"job": str(job_id), "ratings": report.ratings.inserted})
    return "succeeded"


async def stale_jobs(*, stale_after: float) -> list[str]:
    """Running jobs whose worker stopped reporting: candidates to queue again."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    cursor = ImportJob.get_motor_collection().find(
        {"status": "running", "heartbeat_at": {"$lt": cutoff}}, {"_id": 1}
    )
    return [str(doc["_id"]) async for doc in cursor]
