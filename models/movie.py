"""Movies with their embedded rating summary."""

from __future__ import annotations

from datetime import datetime

from beanie import Document
from pydantic import BaseModel, Field

from models.common import RatingStats, utcnow


class ExternalIds(BaseModel):
    movielens: int | None = None
    imdb: str | None = None
    tmdb: int | None = None


class RatingSummary(RatingStats):
    """RatingStats plus the Bayesian weighted score WR = v/(v+m)·R + m/(v+m)·C."""

    weighted: float | None = None
    prior_mean: float | None = None  # the published C this weighted score was computed with


def title_key(title: str) -> str:
    """Case-folded title used for case-insensitive search and sorting."""
    return title.casefold()


class Movie(Document):
    title: str  # as people write it: "The Matrix" (core.titles)
    title_key: str
    aliases: list[str] = Field(default_factory=list)  # other names: "Se7en"
    source_title: str | None = None  # as the imported release wrote it: "Matrix, The (1999)"
    search_names: list[str] = Field(default_factory=list)  # core.search
    search_terms: list[str] = Field(default_factory=list)  # core.search
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    external_ids: ExternalIds = Field(default_factory=ExternalIds)
    rating: RatingSummary = Field(default_factory=RatingSummary)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "movies"


class GlobalRatingStats(Document):
    """The catalogue-wide mean C used by every weighted score."""

    id: str = "ratings"  # type: ignore[assignment]
    mean: float | None = None
    votes: int = 0
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "global_stats"
