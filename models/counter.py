"""Named sequences (one document each)."""

from __future__ import annotations

from beanie import Document


class Counter(Document):
    """A monotonic sequence, advanced with $inc; `aggregation` orders summary writes."""

    id: str  # type: ignore[assignment]
    seq: int = 0

    class Settings:
        name = "counters"
