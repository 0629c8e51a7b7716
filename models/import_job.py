"""Import jobs: what an operator asked to load, and how far the worker got."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from models.common import utcnow

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")


class ImportJob(Document):
    source: Literal["movielens"] = "movielens"
    path: str | None = None  # relative to IMPORT_ROOT
    url: str | None = None
    dry_run: bool = False
    status: JobStatus = "queued"
    cancel_requested: bool = False
    idempotency_key: str | None = None
    fingerprint: str = ""
    created_by: PydanticObjectId | None = None
    attempts: int = 0
    worker: str | None = None
    report: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None

    class Settings:
        name = "import_jobs"
        indexes = [
            IndexModel(
                [("idempotency_key", ASCENDING)],
                unique=True,
                name="idempotency_key_unique",
                partialFilterExpression={"idempotency_key": {"$type": "string"}},
            ),
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="recent"),
        ]
