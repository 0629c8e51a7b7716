"""Import jobs: what an operator asked to load, and how far the worker got."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import BaseModel, Field

from models.common import utcnow

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")
MAX_BAD_SAMPLES = 100


class Counts(BaseModel):
    """What happened to the documents of one kind."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


class BadRow(BaseModel):
    """A row that was skipped, and why."""

    file: str
    line: int
    reason: str


class FileProgress(BaseModel):
    """Data rows read so far out of the file's total."""

    done: int = 0
    total: int = 0


class ImportReport(BaseModel):
    """What an import did so far: written by the importer, read by operators."""

    movies: Counts = Field(default_factory=Counts)
    users: Counts = Field(default_factory=Counts)
    ratings: Counts = Field(default_factory=Counts)
    tags: int = 0
    # Release records of a film another record of the release stands for (the same IMDb or
    # TMDb id): their ratings go to that one record, none of them is stored.
    merged: int = 0
    bad_rows: int = 0
    bad_samples: list[BadRow] = Field(default_factory=list)
    progress: dict[str, FileProgress] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per file and step

    def bad(self, file: str, line: int, reason: str) -> None:
        """Count a skipped row; the first MAX_BAD_SAMPLES are kept."""
        self.bad_rows += 1
        if len(self.bad_samples) < MAX_BAD_SAMPLES:
            self.bad_samples.append(BadRow(file=file, line=line, reason=reason))


class ImportJob(Document):
    source: Literal["movielens"] = "movielens"
    path: str | None = None  # relative to IMPORT_ROOT
    url: str | None = None
    dry_run: bool = False
    status: JobStatus = "queued"
    cancel_requested: bool = False
    idempotency_key: str | None = None
    fingerprint: str = ""
    created_by: PydanticObjectId | None = None  # the person who asked
    created_by_client: str | None = None  # or the operator client (its client_id)
    attempts: int = 0
    worker: str | None = None
    report: ImportReport = Field(default_factory=ImportReport)
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    sent_at: datetime | None = None  # when its task message last went to the broker
    waiting_for: str | None = None  # the lease holder it waits behind (another import)

    class Settings:
        name = "import_jobs"
