"""The catalogue: create, read, list with filters and sorts, change, delete."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from functools import cmp_to_key, partial
from typing import Any

import orjson
from beanie import PydanticObjectId, SortDirection
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
from core.db import BatchedFinds
from core.errors import Conflict, InvalidInput, NotFound
from core.queue import TaskQueue
from core.search import SearchText, search_fields, title_fields
from core.services import Page, Position, Sort, aggregation, keyset_page, paged
from models import ExternalIds, Movie, utcnow

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

# Each set of filters an index serves, with the sorts that index reads in order (the first
# is the default); any other filtered list would read and sort a whole genre or range of
# years on every request. A search (`q`) reads a bounded set of candidates instead.
SERVED: dict[frozenset[str], tuple[str, ...]] = {
    frozenset(): ("title", *(s for s in SORTS if s != "title")),
    frozenset({"genre"}): ("-weighted", "weighted"),
    frozenset({"year"}): ("year", "-year"),
    frozenset({"min_votes"}): ("-votes", "votes"),
}

# Fields that may hold no value (no year; no summary yet): their rows sort below numbers.
NULLABLE = {"year", "rating.mean", "rating.weighted"}
# One read per event-loop turn for every movie shown by id (GET /movies/{id} misses).
_movies_by_id = BatchedFinds(Movie.get_motor_collection)
RELEVANCE = "relevance"  # the order of a search when no sort is asked for
CANDIDATES = 1_000  # the most rated movies holding a query's longest word that one search ranks
RANK_SLICE = 200  # candidates ranked per event-loop turn (~1 ms)
RELEVANCE_SORT: Sort = [("rank", ASC), ("_id", ASC)]
# What a search reads of each candidate: its names to rank it, and every sort key.
CANDIDATE_FIELDS = {
    "search_names": 1, "title_key": 1, "year": 1, "rating.count": 1, "rating.mean": 1,
    "rating.weighted": 1,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class MovieQuery:
    """What a client may ask of the movie list."""

    q: str | None = None
    genre: str | None = None
    year_min: int | None = None
    year_max: int | None = None
    min_votes: int | None = None
    sort: str | None = None

    @property
    def filters(self) -> frozenset[str]:
        """The filters given besides `q`: genre, year (either bound), min_votes."""
        given = {
            "genre": bool(self.genre),
            "year": self.year_min is not None or self.year_max is not None,
            "min_votes": bool(self.min_votes),
        }
        return frozenset(name for name, on in given.items() if on)

    @property
    def order(self) -> str:
        """The sort asked for, else relevance for a search, else the order the filters'
        index reads (title without filters)."""
        if self.sort:
            return self.sort
        if self.q:
            return RELEVANCE
        return SERVED.get(self.filters, SERVED[frozenset()])[0]


class UnservedQuery(InvalidInput):
    """A filtered list in an order no index reads: it would sort a whole range per request."""

    def __init__(self, query: MovieQuery) -> None:
        asked = " and ".join(sorted(query.filters))
        served = [
            {"filters": sorted(filters), "sorts": list(sorts)}
            for filters, sorts in SERVED.items()
            if filters
        ]
        super().__init__(
            f"Movies filtered by {asked} cannot be sorted by {query.order}. Served: "
            + "; ".join(f"{' and '.join(s['filters'])} with sort {', '.join(s['sorts'])}"
                        for s in served)
            + "; any sort with no filter, and any filter and sort with q.",
            {"sort": [f"Not served with the filter {asked}."]},
            location="querystring",
            served=served,
        )  # fmt: skip


def check_served(query: MovieQuery) -> None:
    """Refuse a filtered list that no index reads in its order (`SERVED`)."""
    if query.q:
        return
    if query.order not in SERVED.get(query.filters, ()):
        raise UnservedQuery(query)


def movie_filter(query: MovieQuery) -> dict[str, Any]:
    """One merged filter document for every filter but `q` (never $and: SecantusDB would
    not use an index for it)."""
    flt: dict[str, Any] = {}
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


def _value(movie: Movie, path: str) -> Any:
    value: Any = movie
    for name in path.split("."):
        value = getattr(value, name)
    return value


async def _find(flt: dict[str, Any], sort: Sort, skip: int = 0, limit: int = 0) -> list[Movie]:
    """Movies read with the driver: Beanie would send a projection naming every field, which
    costs SecantusDB more per document and changes nothing in the answer."""
    cursor = Movie.get_motor_collection().find(flt, sort=sort or None, skip=skip, limit=limit)
    return [Movie.model_validate(doc) async for doc in cursor]


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _compare(sort: Sort, a: dict[str, Any], b: dict[str, Any]) -> int:
    """Order two projected movies as the server would sort them (no value below any)."""
    for field, direction in sort:
        x, y = _get(a, field), _get(b, field)
        if x == y:
            continue
        if x is None or y is None:
            return -direction if x is None else direction
        return direction if x > y else -direction
    return 0


async def _matches(text: SearchText, *, flt: dict[str, Any]) -> list[dict[str, Any]]:
    """The movies matching a search, each with its `rank`: those with the query as a name,
    and (when its longest word is selective) the `CANDIDATES` most rated holding that word,
    kept when they hold every word (`SearchText.tier`). Both reads are index ranges of
    `search_terms`."""
    collection = Movie.get_motor_collection()
    exact = collection.find({**flt, **text.exact_filter()}, CANDIDATE_FIELDS).limit(CANDIDATES)
    found = {doc["_id"]: doc for doc in await exact.to_list(None)}
    if text.selective:
        words = (
            collection.find({**flt, **text.index_filter()}, CANDIDATE_FIELDS)
            .sort("rating.count", DESC)
            .limit(CANDIDATES)
        )
        async for doc in words:
            found[doc["_id"]] = doc
    matches = []
    for n, doc in enumerate(found.values(), 1):
        tier = text.tier(doc.get("search_names", ()))
        if tier is not None:
            doc["rank"] = (tier, -(_get(doc, "rating.count") or 0))
            matches.append(doc)
        if n % RANK_SLICE == 0:
            await asyncio.sleep(0)  # other requests run between slices of the ranking
    return matches


async def _page_of_matches(
    matches: list[dict[str, Any]], *, sort: Sort, after: Position | None, offset: int, limit: int
) -> Page[Movie]:
    """A page of a search's matches in `sort` order, after `after` (keyset, as the server
    would) or the first `offset`; then the page's movies are read by _id."""
    field = sort[0][0]
    ordered = sorted(matches, key=cmp_to_key(partial(_compare, sort)))
    if after is not None:
        value = tuple(after[0]) if isinstance(after[0], list) else after[0]
        start = {"_id": after[1], **_nested(field, value)}
        ordered = [doc for doc in ordered if _compare(sort, doc, start) > 0]
    chosen = ordered[offset if after is None else 0 :][: limit + 1]
    rows = {m.id: m for m in await _find({"_id": {"$in": [d["_id"] for d in chosen]}}, [])}
    positions = {doc["_id"]: (_get(doc, field), doc["_id"]) for doc in chosen}
    movies = [rows[doc["_id"]] for doc in chosen if doc["_id"] in rows]
    return paged(movies, limit=limit, position=lambda movie: positions[movie.id])


def _nested(path: str, value: Any) -> dict[str, Any]:
    """{"rating": {"mean": 4.0}} from ("rating.mean", 4.0)."""
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


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
    movie = Movie(
        **title_fields(title),
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
    doc = await Movie.get_motor_collection().find_one({"_id": movie_id})  # as _find reads
    if doc is None:
        raise NotFound("No movie with that id.")
    return Movie.model_validate(doc)


async def movie_view(*, movie_id: PydanticObjectId) -> dict[str, Any]:
    """One movie's stored fields as a plain mapping (its id under "id") for a read that only
    shows it, or NotFound: building a Movie costs a fifth of a cold GET /movies/{id}.
    Concurrent calls share one find (core.db.BatchedFinds)."""
    doc = await _movies_by_id.find(movie_id)
    if doc is None:
        raise NotFound("No movie with that id.")
    doc["id"] = doc.pop("_id")
    return doc


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
    *,
    query: MovieQuery,
    limit: int,
    after: Position | None = None,
    offset: int = 0,
    cache: Cache | None = None,
) -> Page[Movie]:
    """A page of movies matching `query` in its order (`MovieQuery.order`), after the
    position `after` (keyset) or the first `offset`; `genre` in any case (with `cache` to
    look its spelling up); `UnservedQuery` for filters and a sort no index serves."""
    check_served(query)
    if query.genre and cache is not None:
        genre = await canonical_genre(query.genre, cache=cache)
        if genre is None:
            return Page(items=[])
        query = replace(query, genre=genre)
    flt = movie_filter(query)
    if query.q:
        text = SearchText.parse(query.q)
        if text is None:
            return Page(items=[])  # only punctuation: no word to look for
        matches = await _matches(text, flt=flt)
        sort = RELEVANCE_SORT if query.order == RELEVANCE else SORTS[query.order]
        return await _page_of_matches(matches, sort=sort, after=after, offset=offset, limit=limit)
    sort = SORTS[query.order]
    field = sort[0][0]
    return await keyset_page(
        _find,
        flt=flt,
        sort=sort,
        after=after,
        offset=offset,
        limit=limit,
        position=lambda movie: (_value(movie, field), movie.id),
        nullable=field in NULLABLE,
    )


async def index_titles(*, cache: Cache, batch: int = 500) -> int:
    """Give every movie stored without search fields its fields; how many it changed.
    Idempotent: a second run finds none."""
    collection = Movie.get_motor_collection()
    changed = 0
    while True:
        missing = collection.find({"search_names": {"$exists": False}}, {"title": 1, "aliases": 1})
        docs = await missing.limit(batch).to_list(None)
        if not docs:
            return changed
        await collection.bulk_write(
            [
                UpdateOne(
                    {"_id": d["_id"]}, {"$set": search_fields(d["title"], d.get("aliases", []))}
                )
                for d in docs
            ],
            ordered=False,
        )
        await cache.movies_changed([d["_id"] for d in docs])
        changed += len(docs)


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
        update.update(title_fields(changes["title"]))
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
