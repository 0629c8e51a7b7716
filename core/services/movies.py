"""The catalogue: create, read, list with filters and sorts, change, delete."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from core import summaries
from core.cache import Cache
from core.errors import Conflict, InvalidInput, NotFound
from core.queue import TaskQueue
from core.search import SearchText, title_fields
from core.services import search
from core.store import ASC, DESC, Duplicate, Page, Position, Sort
from core.store import movies as movie_store
from core.store.movies import Filters, MovieView
from models import ExternalIds, Movie, PydanticObjectId, utcnow

# Sort name -> sort; every one ends in _id (total order) and has an index (core.store.movies).
SORTS: dict[str, Sort] = {
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
    def store_filters(self) -> Filters:
        """Its filters but `q`, as the store reads them."""
        return Filters(
            genre=self.genre,
            year_min=self.year_min,
            year_max=self.year_max,
            min_votes=self.min_votes,
        )

    @property
    def order(self) -> str:
        """The sort asked for, else relevance for a search, else the order the filters'
        index reads (title without filters)."""
        if self.sort:
            return self.sort
        if self.q:
            return search.RELEVANCE
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
    for source in movie_store.EXTERNAL_SOURCES:
        value = external_ids.get(source)
        if value is None:
            continue
        holder = await movie_store.holder_of_external_id(source, value, other_than=other_than)
        if holder is not None:
            raise DuplicateMovie(source=source, existing=holder)


async def create_movie(
    *,
    title: str,
    year: int | None,
    genres: list[str],
    external_ids: dict[str, Any],
    cache: Cache,
) -> MovieView:
    """Add a movie; DuplicateMovie (409) when one of its external ids is taken."""
    await _check_external_ids(external_ids)
    movie = Movie(
        **title_fields(title),
        year=year,
        genres=genres,
        external_ids=ExternalIds(**external_ids),
    )
    try:
        await movie_store.insert(movie)
    except Duplicate:
        raise Conflict("A movie with that MovieLens id exists.", field="external_ids") from None
    await cache.movies_changed([movie.id])
    return movie.model_dump()  # type: ignore[return-value]


async def get_movie(*, movie_id: PydanticObjectId) -> Movie:
    """One movie as its document (to change it), or NotFound."""
    movie = await movie_store.get(movie_id)
    if movie is None:
        raise NotFound("No movie with that id.")
    return movie


async def movie_view(*, movie_id: PydanticObjectId) -> MovieView:
    """One movie for showing, or NotFound."""
    movie = await movie_store.view(movie_id)
    if movie is None:
        raise NotFound("No movie with that id.")
    return movie


async def genre_counts() -> dict[str, list[dict[str, Any]]]:
    """Every genre with its number of movies, by name, as GET /genres shows them."""
    counts = await movie_store.genre_counts()
    return {"items": [{"name": name, "movies": movies} for name, movies in counts]}


async def canonical_genre(name: str, *, cache: Cache) -> str | None:
    """The stored spelling of a genre asked in any case ("comedy" -> "Comedy"), from the
    cached genre list, so the filter stays an index equality; None when there is none."""
    listed = orjson.loads(await cache.fetch(cache.keys.genres(), genre_counts))["items"]
    wanted = name.casefold()
    return next((g["name"] for g in listed if g["name"].casefold() == wanted), None)


async def list_movies(
    *,
    query: MovieQuery,
    limit: int,
    after: Position | None = None,
    offset: int = 0,
    cache: Cache | None = None,
) -> Page[MovieView]:
    """A page of movies matching `query` in its order (`MovieQuery.order`), after the
    position `after` (keyset) or the first `offset`; `genre` in any case (with `cache` to
    look its spelling up); `UnservedQuery` for filters and a sort no index serves."""
    check_served(query)
    if query.genre and cache is not None:
        genre = await canonical_genre(query.genre, cache=cache)
        if genre is None:
            return Page(items=[])
        query = replace(query, genre=genre)
    filters = query.store_filters
    if query.q:
        text = SearchText.parse(query.q)
        if text is None:
            return Page(items=[])  # only punctuation: no word to look for
        matches = await search.matches(text, filters=filters)
        sort = search.RELEVANCE_SORT if query.order == search.RELEVANCE else SORTS[query.order]
        return await search.page_of_matches(
            matches, sort=sort, after=after, offset=offset, limit=limit
        )
    return await movie_store.page(
        filters, sort=SORTS[query.order], after=after, offset=offset, limit=limit
    )


async def update_movie(
    *, movie_id: PydanticObjectId, changes: dict[str, Any], cache: Cache
) -> MovieView:
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
        found = await movie_store.set_fields(movie_id, update)
    except Duplicate:
        raise Conflict("A movie with that MovieLens id exists.", field="external_ids") from None
    if not found:
        raise NotFound("No movie with that id.")
    await cache.movies_changed([movie_id])
    return await movie_view(movie_id=movie_id)


async def delete_movie(*, movie_id: PydanticObjectId, queue: TaskQueue, cache: Cache) -> None:
    """Remove a movie and its ratings now, so every rating read and write refuses it once
    this returns; a drain recomputes the raters' stats. Each step's intent is recorded
    before it: a crash midway leaves a drain to finish the purge."""
    intent = await summaries.record_intent(movie_ids=[movie_id])
    if not await movie_store.delete(movie_id):
        await summaries.withdraw_intent(intent)
        raise NotFound("No movie with that id.")
    await summaries.purge_ratings([movie_id])
    await cache.movies_deleted([movie_id])
    await queue.request_drain()
