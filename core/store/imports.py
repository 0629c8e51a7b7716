"""The import jobs collection: idempotent creation, claims and cancellation by
compare-and-set, progress, heartbeats, and the sweeps that find lost jobs."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from core.store.errors import duplicate
from core.store.paging import DESC, Page, Position, Sort, keyset_page
from models import FINISHED, ImportJob, utcnow

NEWEST_FIRST: Sort = [("created_at", DESC), ("_id", DESC)]

# The indexes of ImportJob documents (built at start: core.store.indexes).
INDEXES: list[IndexModel] = [
    IndexModel(
        [("idempotency_key", ASCENDING)],
        unique=True,
        name="idempotency_key_unique",
        partialFilterExpression={"idempotency_key": {"$type": "string"}},
    ),
    IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="recent"),
    # Beat's sweeps: queued jobs sent long ago, running ones gone quiet.
    IndexModel([("status", ASCENDING), ("sent_at", ASCENDING)], name="by_status"),
]


def _jobs() -> Any:
    return ImportJob.get_pymongo_collection()


async def get(job_id: PydanticObjectId) -> ImportJob | None:
    """One job."""
    return await ImportJob.get(job_id)


async def by_idempotency_key(key: str) -> ImportJob | None:
    """The job created with this Idempotency-Key."""
    return await ImportJob.find_one({"idempotency_key": key})


async def insert(job: ImportJob) -> ImportJob:
    """Store a new job; Duplicate when its Idempotency-Key was taken meanwhile."""
    try:
        await job.insert()
    except DuplicateKeyError as exc:
        raise duplicate(exc) from None
    return job


async def _find(flt: dict[str, Any], sort: Sort, skip: int, limit: int) -> list[ImportJob]:
    cursor = _jobs().find(flt, sort=sort, skip=skip, limit=limit)
    return [ImportJob.model_validate(doc) async for doc in cursor]


async def page(*, after: Position | None, offset: int, limit: int) -> Page[ImportJob]:
    """Jobs, newest first, after `after` (keyset) or the first `offset`."""
    return await keyset_page(
        _find, flt={}, sort=NEWEST_FIRST, after=after, offset=offset, limit=limit,
        position=lambda job: (job.created_at, job.id),
    )  # fmt: skip


async def _change(flt: dict[str, Any], update: dict[str, Any]) -> ImportJob | None:
    doc = await _jobs().find_one_and_update(flt, update, return_document=ReturnDocument.AFTER)
    return None if doc is None else ImportJob.model_validate(doc)


async def cancel_queued(job_id: PydanticObjectId) -> ImportJob | None:
    """Cancel a job still queued; None when a worker took it meanwhile."""
    return await _change(
        {"_id": job_id, "status": "queued"},
        {"$set": {"cancel_requested": True, "status": "cancelled", "finished_at": utcnow()}},
    )


async def request_cancel(job_id: PydanticObjectId) -> ImportJob | None:
    """Ask a running job to stop at its next batch."""
    return await _change({"_id": job_id}, {"$set": {"cancel_requested": True}})


async def claim(job: ImportJob) -> ImportJob | None:
    """Mark a job running for this process, if its status and heartbeat are still those of
    `job` (compare-and-set: two redeliveries cannot both win); None when they are not."""
    now = utcnow()
    return await _change(
        {"_id": job.id, "status": job.status, "heartbeat_at": job.heartbeat_at},
        {
            "$set": {
                "status": "running",
                "waiting_for": None,
                "worker": f"{socket.gethostname()}:{os.getpid()}",
                "heartbeat_at": now,
                "started_at": job.started_at or now,
            },
            "$inc": {"attempts": 1},
        },
    )


async def set_fields(job_id: Any, fields: dict[str, Any]) -> None:
    """Set fields of one job (its progress report, heartbeat, end)."""
    await _jobs().update_one({"_id": job_id}, {"$set": fields})


async def cancel_requested(job_id: Any) -> bool:
    """Whether the job was asked to stop (or is gone)."""
    doc = await _jobs().find_one({"_id": job_id}, {"cancel_requested": 1})
    return bool(doc is None or doc.get("cancel_requested"))


async def requeue(job_id: PydanticObjectId, *, waiting_for: str) -> None:
    """Put a running job back in the queue behind another import; waiting is no attempt."""
    await _jobs().update_one(
        {"_id": job_id, "status": "running"},
        {
            "$set": {"status": "queued", "waiting_for": waiting_for, "heartbeat_at": None},
            "$inc": {"attempts": -1},
        },
    )


async def mark_sent(job_ids: list[Any]) -> None:
    """Note when jobs' messages were (re)sent."""
    await _jobs().update_many({"_id": {"$in": job_ids}}, {"$set": {"sent_at": utcnow()}})


async def queued_unsent_since(cutoff: datetime) -> list[Any]:
    """Queued jobs whose last message went out before `cutoff` (or never)."""
    cursor = _jobs().find({"status": "queued", "sent_at": {"$not": {"$gt": cutoff}}}, {"_id": 1})
    return [doc["_id"] async for doc in cursor]


async def running_quiet_since(cutoff: datetime) -> list[Any]:
    """Running jobs whose last heartbeat is before `cutoff`."""
    cursor = _jobs().find({"status": "running", "heartbeat_at": {"$lt": cutoff}}, {"_id": 1})
    return [doc["_id"] async for doc in cursor]


async def statuses(job_ids: list[Any]) -> dict[Any, bool]:
    """Whether each of these jobs that exists has finished."""
    cursor = _jobs().find({"_id": {"$in": job_ids}}, {"_id": 1, "status": 1})
    return {doc["_id"]: doc["status"] in FINISHED async for doc in cursor}
