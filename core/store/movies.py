"""The movies collection: pages in every served order, search candidates, by-id views,
external-id lookups and the writes of the catalogue."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from beanie import PydanticObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.errors import DuplicateKeyError

from core.store import by_movielens_id
from core.store.errors import duplicate
from core.store.paging import DESC, Page, Position, Sort, chunked, keyset_page
from models import Movie

EXTERNAL_SOURCES = ("movielens", "imdb", "tmdb")
# Fields that may hold no value (no year; no summary yet): their rows sort below numbers.
NULLABLE = {"year", "rating.mean", "rating.weighted"}
# What a search reads of each candidate: its names to rank it, and every sort key.
CANDIDATE_FIELDS = {
    "search_names": 1, "title_key": 1, "year": 1, "rating.count": 1, "rating.mean": 1,
    "rating.weighted": 1,
}  # fmt: skip
CARD_FIELDS = {"title": 1, "year": 1, "rating.count": 1, "rating.mean": 1, "rating.weighted": 1}
# Never sent to a client: search keys and the import's own spelling.
_VIEW_HIDDEN = {"search_names": 0, "search_terms": 0, "source_title": 0}

# One index per sort, each ending in _id so the order is total and pages are stable.
INDEXES: list[IndexModel] = [
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
    # One movie per MovieLens id (a partial index: movies added through the API have none).
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


@dataclass(frozen=True, slots=True)
class Filters:
    """What a list of movies may be narrowed by (None: not at all)."""

    genre: str | None = None
    year_min: int | None = None
    year_max: int | None = None
    min_votes: int | None = None

    def document(self) -> dict[str, Any]:
        """One filter document, each field once: never $and, which not every server reads
        from an index."""
        flt: dict[str, Any] = {}
        if self.genre:
            flt["genres"] = self.genre
        years = {
            op: v for op, v in (("$gte", self.year_min), ("$lte", self.year_max)) if v is not None
        }
        if years:
            flt["year"] = years
        if self.min_votes:
            flt["rating.count"] = {"$gte": self.min_votes}
        return flt


class MovieView(TypedDict, total=False):
    """A movie as stored, for showing: `id` and every public field (absent ones take the
    model's defaults when shown)."""

    id: PydanticObjectId
    title: str
    aliases: list[str]
    year: int | None
    genres: list[str]
    external_ids: dict[str, Any]
    rating: dict[str, Any]


class MovieCard(TypedDict, total=False):
    """What a list of other things shows of a movie: title, year and its summary's head."""

    id: PydanticObjectId
    title: str
    year: int | None
    rating: dict[str, Any]


def _view(doc: dict[str, Any]) -> MovieView:
    doc["id"] = doc.pop("_id")
    return doc  # type: ignore[return-value]


def value_at(doc: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of a stored document (None when absent)."""
    value: Any = doc
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


async def _find(flt: dict[str, Any], sort: Sort, skip: int, limit: int) -> list[MovieView]:
    cursor = Movie.get_pymongo_collection().find(
        flt, _VIEW_HIDDEN, sort=sort or None, skip=skip, limit=limit
    )
    return [_view(doc) async for doc in cursor]


async def page(
    filters: Filters, *, sort: Sort, after: Position | None, offset: int, limit: int
) -> Page[MovieView]:
    """A page of movies matching `filters` in `sort` order, after `after` (keyset) or the
    first `offset`."""
    field = sort[0][0]
    return await keyset_page(
        _find, flt=filters.document(), sort=sort, after=after, offset=offset, limit=limit,
        position=lambda movie: (value_at(movie, field), movie["id"]),  # type: ignore[arg-type]
        nullable=field in NULLABLE,
    )  # fmt: skip


async def views(ids: list[PydanticObjectId]) -> dict[PydanticObjectId, MovieView]:
    """The movies with these ids that exist, by id."""
    found: dict[PydanticObjectId, MovieView] = {}
    for part in chunked(ids):
        for movie in await _find({"_id": {"$in": part}}, [], 0, 0):
            found[movie["id"]] = movie
    return found


async def cards(
    ids: Iterable[Any], filters: Filters | None = None
) -> dict[PydanticObjectId, MovieCard]:
    """The cards of the movies with these ids (and matching `filters`), by id."""
    found: dict[PydanticObjectId, MovieCard] = {}
    collection = Movie.get_pymongo_collection()
    flt = filters.document() if filters else {}
    for part in chunked(list(ids)):
        async for doc in collection.find({**flt, "_id": {"$in": part}}, CARD_FIELDS):
            card: MovieCard = _view(doc)  # type: ignore[assignment]
            found[card["id"]] = card
    return found


async def view(movie_id: PydanticObjectId) -> MovieView | None:
    """One movie for showing."""
    doc = await Movie.get_pymongo_collection().find_one({"_id": movie_id}, _VIEW_HIDDEN)
    return None if doc is None else _view(doc)


async def get(movie_id: PydanticObjectId) -> Movie | None:
    """One movie as its document."""
    doc = await Movie.get_pymongo_collection().find_one({"_id": movie_id})
    return None if doc is None else Movie.model_validate(doc)


async def exists(movie_id: PydanticObjectId) -> bool:
    """Whether the movie is there (an _id-only read)."""
    found = await Movie.get_pymongo_collection().find_one({"_id": movie_id}, {"_id": 1})
    return found is not None


async def search_candidates(
    filters: Filters, *, exact_term: str, word: str | None, limit: int
) -> list[dict[str, Any]]:
    """The movies stored under `exact_term` (a searched name), and with `word` the `limit`
    most rated holding that word, read with the fields a ranking needs (CANDIDATE_FIELDS).
    Both are equalities on the multikey `search_terms` index: every server reads those from
    the index, where SecantusDB would scan the collection for an $all of several words."""
    collection = Movie.get_pymongo_collection()
    flt = filters.document()
    cursor = collection.find({**flt, "search_terms": exact_term}, CANDIDATE_FIELDS).limit(limit)
    found = {doc["_id"]: doc for doc in await cursor.to_list(None)}
    if word is not None:
        ranked = collection.find({**flt, "search_terms": word}, CANDIDATE_FIELDS)
        async for doc in ranked.sort("rating.count", DESC).limit(limit):
            found[doc["_id"]] = doc
    return list(found.values())


async def holder_of_external_id(
    source: str, value: Any, *, other_than: PydanticObjectId | None = None
) -> PydanticObjectId | None:
    """The movie (other than `other_than`) carrying this external id, if any."""
    flt: dict[str, Any] = {f"external_ids.{source}": value}
    if other_than is not None:
        flt["_id"] = {"$ne": other_than}
    found = await Movie.get_pymongo_collection().find_one(flt, {"_id": 1})
    return None if found is None else found["_id"]


async def genre_counts() -> list[tuple[str, int]]:
    """Every genre with its number of movies, by name."""
    pipeline: list[dict[str, Any]] = [
        {"$unwind": "$genres"},
        {"$group": {"_id": "$genres", "movies": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    rows = await (await Movie.get_pymongo_collection().aggregate(pipeline)).to_list(None)
    return [(row["_id"], row["movies"]) for row in rows]


async def insert(movie: Movie) -> Movie:
    """Store a new movie; Duplicate when its MovieLens id is taken."""
    try:
        await movie.insert()
    except DuplicateKeyError as exc:
        raise duplicate(exc) from None
    return movie


async def set_fields(movie_id: PydanticObjectId, changes: dict[str, Any]) -> bool:
    """Set fields (dotted paths) of one movie; False when there is none; Duplicate when its
    MovieLens id is another's."""
    try:
        result = await Movie.get_pymongo_collection().update_one(
            {"_id": movie_id}, {"$set": changes}
        )
    except DuplicateKeyError as exc:
        raise duplicate(exc) from None
    return result.matched_count > 0


async def delete(movie_id: PydanticObjectId) -> bool:
    """Remove one movie; False when there was none."""
    result = await Movie.get_pymongo_collection().delete_one({"_id": movie_id})
    return result.deleted_count > 0


async def without_search_fields(limit: int) -> list[dict[str, Any]]:
    """Up to `limit` movies stored before search fields existed: their ids and names."""
    missing = Movie.get_pymongo_collection().find(
        {"search_names": {"$exists": False}}, {"title": 1, "aliases": 1}
    )
    return await missing.limit(limit).to_list(None)


async def set_each(changes: dict[PydanticObjectId, dict[str, Any]]) -> None:
    """Set other fields on each of several movies, in one unordered bulk write."""
    if changes:
        await Movie.get_pymongo_collection().bulk_write(
            [UpdateOne({"_id": i}, {"$set": c}) for i, c in changes.items()], ordered=False
        )


async def count() -> int:
    """How many movies there are (the collection's estimate: no scan)."""
    return await Movie.get_pymongo_collection().estimated_document_count()


async def top_weighted(filters: Filters, *, limit: int) -> list[MovieCard]:
    """The cards of the `limit` movies matching `filters` with the highest weighted score
    (those with a score: the range leaves the unscored out)."""
    flt = {**filters.document(), "rating.weighted": {"$gte": float("-inf")}}
    cursor = (
        Movie.get_pymongo_collection()
        .find(flt, CARD_FIELDS)
        .sort([("rating.weighted", DESC), ("_id", 1)])
        .limit(limit)
    )
    return [_view(doc) async for doc in cursor]  # type: ignore[misc]


# What finding duplicates reads of each movie: its names, year, ids and votes.
DEDUPE_FIELDS = {
    "title": 1, "title_key": 1, "year": 1, "aliases": 1, "external_ids": 1, "rating.count": 1,
}  # fmt: skip


async def dedupe_cards() -> list[dict[str, Any]]:
    """Every movie with the fields duplicates are found by (DEDUPE_FIELDS)."""
    cursor = Movie.get_pymongo_collection().find({}, DEDUPE_FIELDS)
    return [doc async for doc in cursor]


async def dedupe_card(movie_id: PydanticObjectId) -> dict[str, Any] | None:
    """One movie with DEDUPE_FIELDS."""
    return await Movie.get_pymongo_collection().find_one({"_id": movie_id}, DEDUPE_FIELDS)


async def by_movielens_ids(ids: list[int], fields: dict[str, int]) -> dict[int, dict[str, Any]]:
    """The movies with these MovieLens ids (with `fields`), by MovieLens id."""
    found: dict[int, dict[str, Any]] = {}
    collection = Movie.get_pymongo_collection()
    for part in chunked(ids):
        cursor = collection.find({"external_ids.movielens": {"$in": part}}, fields)
        async for doc in cursor:
            found[doc["external_ids"]["movielens"]] = doc
    return found


async def unlinked_matching(
    path: str, values: list[Any], fields: dict[str, int]
) -> list[dict[str, Any]]:
    """Movies without a MovieLens id whose `path` is one of `values` (with `fields`)."""
    found: list[dict[str, Any]] = []
    collection = Movie.get_pymongo_collection()
    for part in chunked(values):
        flt = {path: {"$in": part}, "external_ids.movielens": None}
        found.extend([doc async for doc in collection.find(flt, fields)])
    return found


async def insert_imported(docs: dict[int, dict[str, Any]]) -> dict[int, Any]:
    """Store new movies by MovieLens id; the ids the database holds for them."""
    return await by_movielens_id.insert_new(Movie, docs)


async def any_movie() -> bool:
    """Whether the catalogue holds a movie."""
    return await Movie.get_pymongo_collection().find_one({}, {"_id": 1}) is not None


async def insert_many(movies: list[Movie]) -> None:
    """Store new movies at once."""
    await Movie.insert_many(movies)
