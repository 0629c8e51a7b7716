"""Recompute intents: what a write changed, recorded in MongoDB before the write itself."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId
from pydantic import Field

from models.common import utcnow


class SummaryIntent(Document):
    """Movies and users whose summaries a write changed; cleared by the drain once it has
    recomputed them (a PUT instead marks its rating: `Rating` `changed_at`).

    `job_id` marks an import batch's intent: its job recomputes and clears them when it ends;
    the drain takes them only once that job is no longer running.
    """

    movie_ids: list[PydanticObjectId] = Field(default_factory=list)
    user_ids: list[PydanticObjectId] = Field(default_factory=list)
    job_id: PydanticObjectId | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "summary_intents"


class DrainMark(Document):
    """How far the drain has taken the rating writes: every write whose `changed_at` is
    before `drained_before` (the database server's clock) is reflected in the summaries."""

    id: str = "ratings"  # type: ignore[assignment]
    drained_before: datetime

    class Settings:
        name = "drain_marks"
