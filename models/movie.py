"""Movies with their embedded rating summary."""

from __future__ import annotations

from datetime import datetime

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

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
        # One index per sort, each ending in _id so the order is total and pages are stable.
        indexes = [
            IndexModel([("title_key", ASCENDING), ("_id", ASCENDING)], name="sort_title"),
            IndexModel([("year", ASCENDING), ("_id", ASCENDING)], name="sort_year"),
            IndexModel([("rating.mean", DESCENDING), ("_id", ASCENDING)], name="sort_mean"),
            IndexModel([("rating.count", DESCENDING), ("_id", ASCENDING)], name="sort_votes"),
            IndexModel([("rating.weighted", DESCENDING), ("_id", ASCENDING)], name="sort_weighted"),
            # A genre by weighted score, the one filtered order (core.services.movies.SERVED).
            IndexModel(
                [("genres", ASCENDING), ("rating.weighted", DESCENDING), ("_id", ASCENDING)],
                name="genre_weighted_id",
            ),
            # Title search (core.search): exact names and words, then the most rated first.
            IndexModel([("search_terms", ASCENDING), ("rating.count", DESCENDING)], name="search"),
            # Duplicate checks on create and change (409 names the movie that has the id).
            IndexModel([("external_ids.imdb", ASCENDING)], name="imdb_lookup"),
            IndexModel([("external_ids.tmdb", ASCENDING)], name="tmdb_lookup"),
            # Lets "store this summary unless a newer one is there" find the movie by index.
            IndexModel(
                [("external_ids.movielens", ASCENDING)],
                name="movielens_id",
                unique=True,
                partialFilterExpression={"external_ids.movielens": {"$type": "number"}},
            ),
            # Lookups by MovieLens id (imports): a plain compound index, which every server
            # uses for $in; not every server proves an $in of numbers matches the partial one.
            IndexModel(
                [("external_ids.movielens", ASCENDING), ("_id", ASCENDING)],
                name="movielens_lookup",
            ),
        ]


class GlobalRatingStats(Document):
    """The catalogue-wide mean C used by every weighted score."""

    id: str = "ratings"  # type: ignore[assignment]
    mean: float | None = None
    votes: int = 0
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "global_stats"
