"""Import jobs as operators see them: create (idempotently), read, list, cancel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId, SortDirection
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from api.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from api.queue import RUN_IMPORT, TaskQueue
from api.services import Page, page_of
from models import FINISHED, ImportJob, utcnow


def resolve_import_path(root: Path, raw: str) -> tuple[Path, str]:
    """(absolute path, path relative to the import root); anything escaping it is refused."""
    base = root.resolve()
    candidate = (base / raw).resolve()  # an absolute `raw` replaces base: checked below
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
    created_by: PydanticObjectId,
    import_root: Path,
    queue: TaskQueue,
) -> tuple[ImportJob, bool]:
    """Queue an import; the same Idempotency-Key returns the same job (True when new)."""
    fingerprint = _fingerprint(body)
    if idempotency_key is not None:
        existing = await ImportJob.find_one({"idempotency_key": idempotency_key})
        if existing is not None:
            return _same_request(existing, fingerprint), False
    path = body.get("path")
    if path is not None:
        _, path = resolve_import_path(import_root, path)
    job = ImportJob(
        source=body["source"],
        path=path,
        url=body.get("url"),
        dry_run=body.get("dry_run", False),
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        created_by=created_by,
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
    return job, True


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


async def list_jobs(*, offset: int, limit: int) -> Page[ImportJob]:
    """Import jobs, newest first."""
    rows = (
        await ImportJob.find({})
        .sort([("created_at", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)])
        .skip(offset)
        .limit(limit + 1)
        .to_list()
    )
    return page_of(rows, offset=offset, limit=limit)


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


async def _finish(job_id: Any, *, status: str, error: str | None = None) -> None:
    await ImportJob.get_motor_collection().update_one(
        {"_id": job_id}, {"$set": {"status": status, "error": error, "finished_at": utcnow()}}
    )
