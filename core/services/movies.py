"""The catalogue: create, read, list with filters and sorts, change, delete."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import orjson
from beanie import PydanticObjectId, SortDirection
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
from core.errors import Conflict, NotFound
from core.queue import TaskQueue
from core.services import Page, aggregation, page_of
from core.titles import display_title
from models import ExternalIds, Movie, title_key, utcnow

# Sort name -> Mongo sort; every one ends in _id (total order) and has an index (models.movie).
ASC, DESC = SortDirection.ASCENDING, SortDirection.DESCENDING
SORTS: dict[str, list[tuple[str, SortDirection]]] = {
    "title": [("title_key", ASC), ("_id", ASC)],
    "-title": [("title_key", DESC), ("_id", DESC)],
    "year": [("year", ASC), ("_id", ASC)],
    "-year": [("year", DESC), ("_id", DESC)],
    "mean": [("rating.mean", ASC), ("_id", DESC)],
    "-mean": [("rating.mean", DESC), ("_id", ASC)],
    "votes": [("rating.count", ASC), ("_id", DESC)],
    "-votes": [("rating.count", DESC), ("_id", ASC)],
    "weighted": [("rating.weighted", ASC), ("_id", DESC)],
    "-weighted": [("rating.weighted", DESC), ("_id", ASC)],
}


@dataclass(frozen=True, slots=True)
class MovieQuery:
    """What a client may ask of the movie list."""

    q: str | None = None
    genre: str | None = None
    year_min: int | None = None
    year_max: int | None = None
    min_votes: int | None = None
    sort: str = "title"


def movie_filter(query: MovieQuery) -> dict[str, Any]:
    """One merged filter document (never $and: SecantusDB would not use an index for it)."""
    flt: dict[str, Any] = {}
    if query.q:
        flt["title_key"] = {"$regex": re.escape(title_key(query.q))}
    if query.genre:
        flt["genres"] = query.genre
    if query.year_min is not None or query.year_max is not None:
        years: dict[str, int] = {}
        if query.year_min is not None:
            years["$gte"] = query.year_min
        if query.year_max is not None:
            years["$lte"] = query.year_max
        flt["year"] = years
    if query.min_votes:
        flt["rating.count"] = {"$gte": query.min_votes}
    return flt


class DuplicateMovie(Conflict):
    """Another movie already carries one of these external ids."""

    def __init__(self, *, source: str, existing: PydanticObjectId) -> None:
        super().__init__(
            f"The movie with this {source} id is already in the catalogue.",
            field=f"external_ids.{source}",
        )
        self.existing = existing


async def _check_external_ids(
    external_ids: dict[str, Any], *, other_than: PydanticObjectId | None = None
) -> None:
    """DuplicateMovie when another movie has one of these ids (MovieLens, IMDb, TMDb)."""
    collection = Movie.get_motor_collection()
    for source in ("movielens", "imdb", "tmdb"):
        value = external_ids.get(source)
        if value is None:
            continue
        flt: dict[str, Any] = {f"external_ids.{source}": value}
        if other_than is not None:
            flt["_id"] = {"$ne": other_than}
        found = await collection.find_one(flt, {"_id": 1})
        if found is not None:
            raise DuplicateMovie(source=source, existing=found["_id"])


async def create_movie(
    *,
    title: str,
    year: int | None,
    genres: list[str],
    external_ids: dict[str, Any],
    cache: Cache,
) -> Movie:
    """Add a movie; DuplicateMovie (409) when one of its external ids is taken."""
    await _check_external_ids(external_ids)
    shown, aliases = display_title(title)
    movie = Movie(
        title=shown,
        title_key=title_key(shown),
        aliases=aliases,
        year=year,
        genres=genres,
        external_ids=ExternalIds(**external_ids),
    )
    try:
        await movie.insert()
    except DuplicateKeyError:
        raise Conflict("A movie with that MovieLens id exists.", field="external_ids") from None
    await cache.movies_changed([movie.id])
    return movie


async def get_movie(*, movie_id: PydanticObjectId) -> Movie:
    """Fetch one movie with its rating summary or raise NotFound."""
    movie = await Movie.get(movie_id)
    if movie is None:
        raise NotFound("No movie with that id.")
    return movie


async def genre_counts() -> dict[str, list[dict[str, Any]]]:
    """Every genre with its number of movies, by name, as GET /genres shows them."""
    pipeline: list[dict[str, Any]] = [
        {"$unwind": "$genres"},
        {"$group": {"_id": "$genres", "movies": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    rows = await Movie.get_motor_collection().aggregate(pipeline).to_list(None)
    return {"items": [{"name": row["_id"], "movies": row["movies"]} for row in rows]}


async def canonical_genre(name: str, *, cache: Cache) -> str | None:
    """The stored spelling of a genre asked in any case ("comedy" -> "Comedy"), from the
    cached genre list, so the filter stays an index equality; None when there is none."""
    listed = orjson.loads(await cache.fetch(cache.genres(), genre_counts))["items"]
    wanted = name.casefold()
    return next((g["name"] for g in listed if g["name"].casefold() == wanted), None)


async def list_movies(
    *, query: MovieQuery, offset: int, limit: int, cache: Cache | None = None
) -> Page[Movie]:
    """A page of movies matching `query`, in the requested stable order; `genre` in any
    case (with `cache` to look its spelling up)."""
    if query.genre and cache is not None:
        genre = await canonical_genre(query.genre, cache=cache)
        if genre is None:
            return Page(items=[], next_offset=None)
        query = replace(query, genre=genre)
    rows = (
        await Movie.find(movie_filter(query))
        .sort(SORTS[query.sort])
        .skip(offset)
        .limit(limit + 1)
        .to_list()
    )
    return page_of(rows, offset=offset, limit=limit)


async def update_movie(
    *, movie_id: PydanticObjectId, changes: dict[str, Any], cache: Cache
) -> Movie:
    """Apply a partial update (title, year, genres, external ids) to one movie;
    DuplicateMovie (409) when an external id it sets belongs to another movie."""
    if changes.get("external_ids"):
        await _check_external_ids(changes["external_ids"], other_than=movie_id)
    update: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "external_ids":
            for source, ext in value.items():
                update[f"external_ids.{source}"] = ext
        else:
            update[key] = value
    if "title" in changes:
        update["title"], update["aliases"] = display_title(changes["title"])
        update["title_key"] = title_key(update["title"])
    update["updated_at"] = utcnow()
    try:
        result = await Movie.get_motor_collection().update_one({"_id": movie_id}, {"$set": update})
    except DuplicateKeyError:
        raise Conflict("A movie with that MovieLens id exists.", field="external_ids") from None
    if result.matched_count == 0:
        raise NotFound("No movie with that id.")
    await cache.movies_changed([movie_id])
    return await get_movie(movie_id=movie_id)


async def delete_movie(*, movie_id: PydanticObjectId, queue: TaskQueue, cache: Cache) -> None:
    """Remove a movie and its ratings now, so every rating read and write refuses it once
    this returns; a drain recomputes the raters' stats. Each step's intent is recorded
    before it: a crash midway leaves a drain to finish the purge."""
    intent = await aggregation.record_intent(movie_ids=[movie_id])
    result = await Movie.get_motor_collection().delete_one({"_id": movie_id})
    if result.deleted_count == 0:
        await aggregation.withdraw_intent(intent)
        raise NotFound("No movie with that id.")
    await aggregation.purge_ratings([movie_id])
    await cache.movies_deleted([movie_id])
    await queue.request_drain()
