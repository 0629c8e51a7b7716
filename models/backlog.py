"""Summaries that need a recomputation no task was queued for (the broker was down)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import Field

from models.common import utcnow


class StaleSummary(Document):
    """One movie or user whose summary is older than its ratings; `_id` is "<kind>:<id>".

    `changed_at` is the newest write no task was queued for: reconciliation removes the
    entry only if nothing newer arrived while it recomputed.
    """

    id: str  # type: ignore[assignment]
    kind: Literal["movie", "user"]
    object_id: PydanticObjectId
    changed_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "stale_summaries"
