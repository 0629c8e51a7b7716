"""Shared pieces of the stored documents."""

from __future__ import annotations

from datetime import UTC, datetime

from beanie import PydanticObjectId
from pydantic import BaseModel, Field

# Half-star scale, MovieLens style: bucket i holds score (i + 1) / 2.
SCORES: tuple[float, ...] = tuple((i + 1) / 2 for i in range(10))


def utcnow() -> datetime:
    # Mongo stores milliseconds; truncating here keeps what we return equal to what we read back.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def parse_id(value: object) -> PydanticObjectId | None:
    """The id a 24-hex-digit string spells, else None."""
    if not isinstance(value, str) or len(value) != 24 or not PydanticObjectId.is_valid(value):
        return None
    return PydanticObjectId(value)


def bucket(score: float) -> int:
    """Histogram bucket index of a half-star score."""
    return round(score * 2) - 1


class RatingStats(BaseModel):
    """Exact aggregate of a set of scores; `version` changes with every stored recomputation
    (a compare-and-set token: a recomputation stores only over the version it read)."""

    count: int = 0
    sum: float = 0.0
    mean: float | None = None
    histogram: list[int] = Field(default_factory=lambda: [0] * 10)
    version: PydanticObjectId | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_histogram(cls, histogram: list[int], **extra: object) -> RatingStats:
        count = sum(histogram)
        # Half-star sums are exact in binary floating point, so the mean is exact too.
        total = sum(n * s for n, s in zip(histogram, SCORES, strict=True))
        return cls(
            count=count,
            sum=total,
            mean=total / count if count else None,
            histogram=list(histogram),
            **extra,  # type: ignore[arg-type]
        )
