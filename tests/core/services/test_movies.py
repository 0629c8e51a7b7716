"""Catalogue services against the test server: title search fields for older records, the
ranking of a search, the filters and sorts the indexes serve."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.services import movies, search
from tests.fakes import NO_CACHE


async def test_movies_stored_before_title_search_get_its_fields_once(client, db):
    await db.movies.insert_many(
        [{"title": f"Old {i}", "title_key": f"old {i}", "aliases": ["Ancien"]} for i in range(7)]
    )
    await movies.create_movie(title="New", year=None, genres=[], external_ids={}, cache=NO_CACHE)
    assert await search.index_titles(cache=NO_CACHE, batch=3) == 7
    assert await search.index_titles(cache=NO_CACHE) == 0
    page = await movies.list_movies(query=movies.MovieQuery(q="ancien"), limit=10)
    assert sorted(m["title"] for m in page.items) == [f"Old {i}" for i in range(7)]


async def test_a_search_ranks_its_candidates_a_slice_per_event_loop_turn(odm, monkeypatch):
    for i in range(25):
        await movies.create_movie(
            title=f"Film {i}", year=None, genres=[], external_ids={}, cache=NO_CACHE
        )
    turns = []

    async def turn(seconds: float) -> None:
        turns.append(seconds)

    monkeypatch.setattr(search, "RANK_SLICE", 10)
    monkeypatch.setattr(search, "asyncio", SimpleNamespace(sleep=turn))
    page = await movies.list_movies(query=movies.MovieQuery(q="film"), limit=30)
    assert len(page.items) == 25
    assert turns == [0, 0]  # after candidates 10 and 20


def test_filters_default_to_the_order_their_index_reads():
    assert movies.MovieQuery().order == "title"
    assert movies.MovieQuery(q="heat").order == search.RELEVANCE
    assert movies.MovieQuery(genre="Drama").order == "-weighted"
    assert movies.MovieQuery(year_max=1990).order == "year"
    assert movies.MovieQuery(min_votes=5).order == "-votes"
    assert movies.MovieQuery(min_votes=0).order == "title"  # no filter
    movies.check_served(movies.MovieQuery(genre="Drama", q="x", sort="year"))
    with pytest.raises(movies.UnservedQuery) as refused:
        movies.check_served(movies.MovieQuery(genre="Drama", year_min=1990))
    assert "genre and year" in refused.value.detail
