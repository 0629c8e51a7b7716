"""Title search over the catalogue: the candidates a query's names and words select, ranked
in this process (exact name, then every word, then votes) and paged like the server would
page them; and the search fields of movies stored before search existed."""

from __future__ import annotations

import asyncio
from functools import cmp_to_key, partial
from typing import Any

from core.cache import Cache
from core.search import SearchText, search_fields
from core.store import ASC, Page, Position, Sort, paged
from core.store import movies as movie_store
from core.store.movies import Filters, MovieView, value_at

RELEVANCE = "relevance"  # the order of a search when no sort is asked for
RELEVANCE_SORT: Sort = [("rank", ASC), ("_id", ASC)]
CANDIDATES = 1_000  # the most rated movies holding a query's longest word that one search ranks
RANK_SLICE = 200  # candidates ranked per event-loop turn (~1 ms)


def _compare(sort: Sort, a: dict[str, Any], b: dict[str, Any]) -> int:
    """Order two projected movies as the server would sort them (no value below any)."""
    for field, direction in sort:
        x, y = value_at(a, field), value_at(b, field)
        if x == y:
            continue
        if x is None or y is None:
            return -direction if x is None else direction
        return direction if x > y else -direction
    return 0


async def matches(text: SearchText, *, filters: Filters) -> list[dict[str, Any]]:
    """The movies matching a search, each with its `rank`: those with the query as a name,
    and (when its longest word is selective) the `CANDIDATES` most rated holding that word,
    kept when they hold every word (`SearchText.tier`)."""
    found = await movie_store.search_candidates(
        filters,
        exact_term=text.exact_term,
        word=text.longest_word if text.selective else None,
        limit=CANDIDATES,
    )
    matches = []
    for n, doc in enumerate(found, 1):
        tier = text.tier(doc.get("search_names", ()))
        if tier is not None:
            doc["rank"] = (tier, -(value_at(doc, "rating.count") or 0))
            matches.append(doc)
        if n % RANK_SLICE == 0:
            await asyncio.sleep(0)  # other requests run between slices of the ranking
    return matches


async def page_of_matches(
    matches: list[dict[str, Any]], *, sort: Sort, after: Position | None, offset: int, limit: int
) -> Page[MovieView]:
    """A page of a search's matches in `sort` order, after `after` (keyset, as the server
    would) or the first `offset`; then the page's movies are read by _id."""
    field = sort[0][0]
    ordered = sorted(matches, key=cmp_to_key(partial(_compare, sort)))
    if after is not None:
        value = tuple(after[0]) if isinstance(after[0], list) else after[0]
        start = {"_id": after[1], **_nested(field, value)}
        ordered = [doc for doc in ordered if _compare(sort, doc, start) > 0]
    chosen = ordered[offset if after is None else 0 :][: limit + 1]
    rows = await movie_store.views([doc["_id"] for doc in chosen])
    positions = {doc["_id"]: (value_at(doc, field), doc["_id"]) for doc in chosen}
    movies = [rows[doc["_id"]] for doc in chosen if doc["_id"] in rows]
    return paged(movies, limit=limit, position=lambda movie: positions[movie["id"]])


def _nested(path: str, value: Any) -> dict[str, Any]:
    """{"rating": {"mean": 4.0}} from ("rating.mean", 4.0)."""
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


async def index_titles(*, cache: Cache, batch: int = 500) -> int:
    """Give every movie stored without search fields its fields; how many it changed.
    Idempotent: a second run finds none."""
    changed = 0
    while True:
        docs = await movie_store.without_search_fields(batch)
        if not docs:
            return changed
        await movie_store.set_each(
            {d["_id"]: search_fields(d["title"], d.get("aliases", [])) for d in docs}
        )
        await cache.movies_changed([d["_id"] for d in docs])
        changed += len(docs)
